"""Speed and memory of RepNeXt's training and fused forms, as the tables of ``speed.py``.

Sections (each prints a table and returns its samples and summary for the JSON report):

(a) :func:`section_train`: one backbone training step in the merged, literal-branches and
    SRP-free forms (:mod:`.training`), in NCHW and channels_last; time and peak-memory ratios.
(b) :func:`section_fused`: the fused backbone's forward on several runtimes vs the authors'
    partial fusion, the unfused form and the compute floor (:mod:`.fused`).
(c) :func:`section_gpu`: throughput with the paper's GPU protocol (:mod:`.gpu`).
(d) :func:`section_with_cp`: the training step with and without activation checkpointing
    (``RepNeXt(with_cp=True)``) at a detection and a classification input shape; peak-memory and
    time ratios. Only on request (``sections``): at 800x1333 a step takes long on a CPU.

All variants of a table run round-robin (:func:`~.timing.round_robin`); each row reports the
median and each ratio is the median of the per-round ratios.
"""
from __future__ import annotations

import gc
import os
import platform
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.models.input_sizes import CLASSIFIER_INPUT_SIZE
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import atomic_write_json, check_output_dir
from .fused import (FULL_EAGER, FULL_OPENVINO, FULL_ORT, FULL_PREFIX, FUSED_BATCH, FUSED_SIZE,
                    GEMM, PARTIAL_EAGER, PARTIAL_ORT, UNFUSED, build_fused_variants,
                    floor_samples, gemm_callable)
from .gpu import cuda_throughput
from .runtimes import choose_threads, describe_cpu, torch_threads
from .timing import paired_ratio, round_robin, spread_ms
from .training import (LAYOUTS, MEMORY_METHOD, TRAIN_BATCH, TRAIN_FORMS, TRAIN_SIZE,
                       TrainingCase, cuda_training_memory, image_hw, measure_training_memory,
                       training_step)

GPU_SIZE = CLASSIFIER_INPUT_SIZE[0]  # square, as the paper's throughput protocol
# (d): mmdet's per-GPU batch at its 1333x800 scale (unpadded), and the classification batch of (a).
CP_SHAPES = ((2, (800, 1333)), (TRAIN_BATCH, TRAIN_SIZE))
SECTIONS = ('train', 'fused', 'gpu', 'with_cp')
Key = tuple[str, str]  # (form, layout) in (a); (form, str(with_cp)) in (d)


def _synchronizer(device: str) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device == 'cuda' else None


def _load_average() -> float:
    return os.getloadavg()[0]


def machine_summary(threads_note: str, device: str) -> dict:
    """What the timings depend on: CPU, torch, threads, load, GPU."""
    info = dict(cpu=describe_cpu(), torch=torch.__version__, torch_threads=torch.get_num_threads(),
                threads_choice=threads_note, load_average=[round(v, 2) for v in os.getloadavg()],
                python=platform.python_version(), mkldnn=torch.backends.mkldnn.is_available(),
                device=device)
    if device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
    return info


def print_machine(info: dict) -> None:
    print('Machine')
    for key, value in info.items():
        print(f'  {key:15s} {value}')
    print()


# --------------------------------------------------------------------------------------------
# (a) training step
# --------------------------------------------------------------------------------------------
def _training_models(cases: dict[Key, TrainingCase], device: str
                     ) -> tuple[dict[Key, nn.Module], dict[Key, Tensor]]:
    """Every case's model, the trainable forms with identical weights, and its input batch (one
    batch per layout, shared by the cases in it)."""
    torch.manual_seed(0)
    reference = RepNeXt(next(iter(cases.values())).arch).state_dict()
    models, inputs, batches = {}, {}, {}
    for key, case in cases.items():
        if case.layout not in batches:
            batches[case.layout] = case.inputs(device)
        inputs[key] = batches[case.layout]
        models[key] = case.build_model(device)
        if case.form != 'srp-free':
            models[key].load_state_dict(reference, strict=True)
    return models, inputs


def _training_memory(cases: dict[Key, TrainingCase], models: dict[Key, nn.Module],
                     inputs: dict[Key, Tensor], device: str, threads: int
                     ) -> dict[Key, list | None]:
    if device == 'cuda':
        return {key: [cuda_training_memory(models[key], inputs[key])] for key in cases}
    return {key: measure_training_memory(case, threads) for key, case in cases.items()}


def _measure_training_steps(cases: dict[Key, TrainingCase], repeats: int, device: str,
                            threads: int, progress: bool, label: str
                            ) -> tuple[dict[Key, list[float]], dict[Key, list | None]]:
    """Times every case's training step round-robin, then measures each one's peak memory.

    Returns:
        ``(times, memory)``: per-round seconds and the measured peaks (``None``: unavailable).
    """
    models, inputs = _training_models(cases, device)
    steps = {key: (lambda m=model, x=inputs[key]: training_step(m, x))
             for key, model in models.items()}
    times = round_robin(steps, warmup=1, runs=repeats, synchronize=_synchronizer(device),
                        progress=progress, label=label)
    memory = _training_memory(cases, models, inputs, device, threads)
    del models, steps, inputs
    gc.collect()
    return times, memory


def _median_peaks(memory: dict[Key, list | None]) -> dict[Key, float | None]:
    return {key: statistics.median(values) if values else None for key, values in memory.items()}


def _print_training_table(heading: str, times: dict[Key, list[float]],
                          peaks: dict[Key, float | None], column: str = 'layout') -> None:
    """One row per ``(form, <column>)`` key: median step time, range and peak memory."""
    print(f'\n  {heading} (load average now {_load_average():.2f})')
    print(f'  {"form":34s} {column:14s} {"median s":>9s} {"range ms":>13s} {"peak MiB":>9s}')
    for (form, setting), samples in times.items():
        peak = peaks[form, setting]
        mib = f'{peak / 2**20:9.0f}' if peak else '      n/a'
        print(f'  {TRAIN_FORMS[form]:34s} {setting:14s} {statistics.median(samples):9.2f} '
              f'{spread_ms(samples):>13s} {mib}')


def _print_memory_method(device: str) -> None:
    if device == 'cpu':
        print(f'    memory: {MEMORY_METHOD}')
    else:
        print('    memory: torch.cuda.max_memory_allocated() growth during one step')


def _layout_summary(layout: str, times: dict[Key, list[float]],
                    peaks: dict[Key, float | None]) -> dict:
    """Merged vs branches (and the bound) in one layout: time and memory ratios, printed."""
    merged, branches, bound = (times[form, layout] for form in TRAIN_FORMS)
    entry = dict(speedup=paired_ratio(branches, merged),
                 speedup_bound=paired_ratio(branches, bound))
    line = (f'  {layout}: merged is {entry["speedup"]:.2f}x faster than branches '
            f'(target >= 1.5x; SRP-free bound {entry["speedup_bound"]:.2f}x)')
    layout_peaks = [peaks[form, layout] for form in TRAIN_FORMS]
    if all(layout_peaks):
        entry.update(memory_ratio=layout_peaks[0] / layout_peaks[1],
                     memory_ratio_bound=layout_peaks[2] / layout_peaks[1])
        line += (f'; memory merged / branches {entry["memory_ratio"]:.2f} (target <= 0.75; '
                 f'bound {entry["memory_ratio_bound"]:.2f})')
    print(line)
    return entry


def _channels_last_summary(times: dict[Key, list[float]]) -> dict:
    summary = dict(
        merged_channels_last_vs_branches_nchw=paired_ratio(times['branches', 'nchw'],
                                                           times['merged', 'channels_last']),
        channels_last_gain_merged=paired_ratio(times['merged', 'nchw'],
                                               times['merged', 'channels_last']))
    print(f'  merged + channels_last vs literal branches in NCHW: '
          f'{summary["merged_channels_last_vs_branches_nchw"]:.2f}x faster; channels_last '
          f'alone speeds the merged form up {summary["channels_last_gain_merged"]:.2f}x')
    return summary


def _arch_label(arch: str | dict) -> str:
    return arch.upper() if isinstance(arch, str) else str(arch)


def train_arch(arch: str | dict, repeats: int, device: str, threads: int, layouts: list[str],
               batch_size: int = TRAIN_BATCH, image_size: int = TRAIN_SIZE,
               progress: bool = True) -> dict:
    """Section (a) for one arch: times and peak memory of every form and layout, printed."""
    cases = {(form, layout): TrainingCase(arch, form, layout, batch_size, image_size)
             for layout in layouts for form in TRAIN_FORMS}
    times, memory = _measure_training_steps(cases, repeats, device, threads, progress,
                                            f'{_arch_label(arch)} training steps')
    peaks = _median_peaks(memory)
    _print_training_table(_arch_label(arch), times, peaks)
    summary = dict(times_s={'/'.join(k): v for k, v in times.items()},
                   memory_bytes={'/'.join(k): v for k, v in memory.items()})
    for layout in layouts:
        summary[layout] = _layout_summary(layout, times, peaks)
    if 'nchw' in layouts and 'channels_last' in layouts:
        summary.update(_channels_last_summary(times))
    return summary


def section_train(archs: list[str], repeats: int, device: str, threads: int,
                  layouts: list[str], progress: bool = True) -> dict:
    """(a) Training step of every arch: merged vs literal branches vs the SRP-free bound."""
    print(f'(a) Training step: backbone forward + backward, batch {TRAIN_BATCH}, '
          f'{TRAIN_SIZE}x{TRAIN_SIZE}, train-mode BN, {device}; layouts: {", ".join(layouts)}')
    print('    SRP-free bound: every SRP conv replaced by a strided copy; no implementation of the '
          'SRP convs can be faster or smaller')
    _print_memory_method(device)
    results = {arch: train_arch(arch, repeats, device, threads, layouts, TRAIN_BATCH, TRAIN_SIZE,
                                progress)
               for arch in archs}
    print()
    return results


# --------------------------------------------------------------------------------------------
# (b) fused forms at 512x512
# --------------------------------------------------------------------------------------------
def _print_fused_table(arch_label: str, times: dict[str, list[float]], facts: dict,
                       gemm_rate: float, floor: list[float], threads: int, best: str) -> None:
    unfused, partial = times[UNFUSED], times[PARTIAL_EAGER]
    print(f'\n  {arch_label}: {facts["gmacs_fused"]:.2f} GMACs fused; BatchNorms: unfused '
          f'{facts["bn_unfused"]}, partial {facts["bn_partial"]}, full {facts["bn_fused"]}; '
          f'GEMM {gemm_rate / 1e9:.1f} GFLOP/s (threads={threads}) -> compute floor '
          f'{statistics.median(floor) * 1e3:.1f} ms (load average now {_load_average():.2f})')
    print(f'  {"variant":44s} {"median ms":>9s} {"range ms":>11s} {"vs unfused":>10s} '
          f'{"vs partial":>10s} {"x floor":>7s}')
    for label, samples in times.items():
        mark = '  <- best' if label == best else ''
        print(f'  {label:44s} {statistics.median(samples) * 1e3:9.1f} {spread_ms(samples):>11s} '
              f'{paired_ratio(unfused, samples):9.2f}x {paired_ratio(partial, samples):9.2f}x '
              f'{paired_ratio(samples, floor):7.2f}{mark}')


def _fused_summary(times: dict[str, list[float]], best: str, floor: list[float]) -> dict:
    """Best path vs partial fusion, unfused and the floor; full vs partial in the same runtime;
    OpenVINO vs ONNX Runtime on the same file; printed."""
    partial = times[PARTIAL_EAGER]
    summary = dict(best=best, best_vs_partial_eager=paired_ratio(partial, times[best]),
                   best_vs_unfused=paired_ratio(times[UNFUSED], times[best]),
                   best_x_floor=paired_ratio(times[best], floor),
                   eager_vs_partial_eager=paired_ratio(partial, times[FULL_EAGER]))
    if PARTIAL_ORT in times:
        summary['ort_full_vs_ort_partial'] = paired_ratio(times[PARTIAL_ORT], times[FULL_ORT])
    print(f'  best ({best}): {summary["best_vs_partial_eager"]:.2f}x faster than the authors\' '
          f'partial fusion in eager PyTorch, {summary["best_vs_unfused"]:.2f}x faster than '
          f'unfused; {summary["best_x_floor"]:.2f}x the compute floor')
    print(f'  same runtime: full vs partial fusion, eager {summary["eager_vs_partial_eager"]:.2f}x'
          + (f', ONNX Runtime {summary["ort_full_vs_ort_partial"]:.2f}x'
             if 'ort_full_vs_ort_partial' in summary else ''))
    if FULL_OPENVINO in times:
        summary['openvino_time_vs_ort'] = paired_ratio(times[FULL_OPENVINO], times[FULL_ORT])
        print(f'  same ONNX file: OpenVINO takes {summary["openvino_time_vs_ort"]:.2f}x ONNX '
              "Runtime's time")
    return summary


def fused_arch(arch: str | dict, repeats: int, device: str, threads: int, use_compile: bool,
               workdir: Path, size: int = FUSED_SIZE, progress: bool = True) -> dict:
    """Section (b) for one arch: every fused variant and the GEMM, timed together, printed.

    The GEMM runs in every round beside the variants and at the same thread count, so the
    floor of each round saw the load that round's variants saw.
    """
    with torch_threads(threads):
        variants, facts = build_fused_variants(arch, device, threads, use_compile, workdir, size)
        gemm, gemm_flop = gemm_callable(device)
        times = round_robin({**variants, GEMM: gemm}, warmup=2, runs=repeats,
                            synchronize=_synchronizer(device), progress=progress,
                            label=f'{_arch_label(arch)} fused forwards')
    del variants, gemm
    gc.collect()
    gemm_times = times.pop(GEMM)
    gemm_rate = gemm_flop / statistics.median(gemm_times)
    floor = floor_samples(facts['gmacs_fused'] * 1e9, gemm_times, gemm_flop)
    full = [label for label in times if label.startswith(FULL_PREFIX)]
    best = min(full, key=lambda label: statistics.median(times[label]))
    _print_fused_table(_arch_label(arch), times, facts, gemm_rate, floor, threads, best)
    return dict(times_s=times, facts=facts, gemm_s=gemm_times, gemm_flops=gemm_rate,
                floor_s=statistics.median(floor), threads=threads,
                **_fused_summary(times, best, floor))


def section_fused(archs: list[str], repeats: int, device: str, threads: int, use_compile: bool,
                  workdir: Path, progress: bool = True) -> dict:
    """(b) Fused backbone forward of every arch at 512x512, batch 1."""
    print(f'(b) Fused backbone forward, batch {FUSED_BATCH}, {FUSED_SIZE}x{FUSED_SIZE}, {device}, '
          f'threads={threads} (the floor\'s GEMM too)')
    if device == 'cpu' and threads > 1:
        # Each runtime's thread pool spins after a call and takes the cores from the next one.
        print('    note: all runtimes share one round-robin here, and above 1 thread their thread '
              'pools compete (M0 at 64x64, 2 threads, 2 busy cores: eager torch took 553 ms beside '
              'ONNX Runtime, 96-147 ms alone); tools/analysis/benchmark.py times each backend in '
              'its own rounds')
    results = {arch: fused_arch(arch, repeats, device, threads, use_compile, workdir, FUSED_SIZE,
                                progress)
               for arch in archs}
    print()
    return results


# --------------------------------------------------------------------------------------------
# (c) GPU throughput
# --------------------------------------------------------------------------------------------
def section_gpu(archs: list[str], max_batch: int) -> dict:
    """(c) Fused fp32 throughput at 224x224, largest power-of-two batch that fits."""
    print(f'(c) GPU throughput, fused fp32, {GPU_SIZE}x{GPU_SIZE}, largest power-of-two batch '
          f'that fits (from {max_batch}, halving on out-of-memory)')
    results = {}
    for arch in archs:
        model = RepNeXt(arch).eval()
        model.switch_to_deploy()
        result = cuda_throughput(model, (GPU_SIZE, GPU_SIZE), max_batch=max_batch, progress=False)
        timing = result['timing']
        print(f'  {arch.upper()}: batch {result["batch_size"]}, {result["images_per_s"]:.0f} '
              f'images/s (median {timing.median_ms:.1f} ms per batch over {timing.runs} runs)')
        results[arch] = dict(batch_size=result['batch_size'], images_per_s=result['images_per_s'],
                             timing=timing.as_dict())
        del model
        torch.cuda.empty_cache()
    print()
    return results


# --------------------------------------------------------------------------------------------
# (d) activation checkpointing
# --------------------------------------------------------------------------------------------
def _shape_label(batch_size: int, image_size: int | tuple[int, int]) -> str:
    height, width = image_hw(image_size)
    return f'{batch_size}x{height}x{width}'


def _with_cp_summary(times: dict[Key, list[float]], peaks: dict[Key, float | None]) -> dict:
    """with_cp=True vs False: paired time ratio and peak-memory ratio, printed."""
    plain, checkpointed = (('merged', str(flag)) for flag in (False, True))
    entry = dict(time_ratio=paired_ratio(times[checkpointed], times[plain]))
    line = f'  with_cp / without: step time {entry["time_ratio"]:.2f}x (target <= 1.4x)'
    if peaks[plain] and peaks[checkpointed]:
        entry['memory_ratio'] = peaks[checkpointed] / peaks[plain]
        line += f', peak memory {entry["memory_ratio"]:.2f}x (target <= 0.5x)'
    print(line)
    return entry


def with_cp_arch(arch: str | dict, repeats: int, device: str, threads: int, batch_size: int,
                 image_size: int | tuple[int, int], progress: bool = True) -> dict:
    """Section (d) for one arch and input shape: the merged training step with and without
    activation checkpointing, timed round-robin, and each one's peak memory; printed."""
    cases = {('merged', str(flag)): TrainingCase(arch, 'merged', 'nchw', batch_size, image_size,
                                                  with_cp=flag)
             for flag in (False, True)}
    shape = _shape_label(batch_size, image_size)
    times, memory = _measure_training_steps(cases, repeats, device, threads, progress,
                                            f'{_arch_label(arch)} {shape} with_cp')
    peaks = _median_peaks(memory)
    _print_training_table(f'{_arch_label(arch)}, batch x height x width {shape}', times, peaks,
                          column='with_cp')
    return dict(times_s={'/'.join(k): v for k, v in times.items()},
                memory_bytes={'/'.join(k): v for k, v in memory.items()},
                **_with_cp_summary(times, peaks))


def section_with_cp(archs: list[str], repeats: int, device: str, threads: int,
                    progress: bool = True) -> dict:
    """(d) Activation checkpointing: training step memory and time, at each of
    :data:`CP_SHAPES`."""
    shapes = ' and '.join(_shape_label(batch, size) for batch, size in CP_SHAPES)
    print(f"(d) Activation checkpointing: backbone forward + backward, srp_forward='merged', "
          f'NCHW, train-mode BN, {device}; RepNeXt(with_cp=True) vs with_cp=False, batch x '
          f'height x width {shapes}')
    _print_memory_method(device)
    results = {arch: {_shape_label(batch, size): with_cp_arch(arch, repeats, device, threads,
                                                              batch, size, progress)
                      for batch, size in CP_SHAPES}
               for arch in archs}
    print()
    return results


# --------------------------------------------------------------------------------------------
# The whole report
# --------------------------------------------------------------------------------------------
@dataclass
class SpeedSettings:
    """What ``tools/analysis/speed.py`` measures (its command line options)."""
    archs: list[str] = field(default_factory=lambda: ['m1', 'm4'])
    repeats: int = 7
    train_repeats: int = 3
    train_layouts: list[str] = field(default_factory=lambda: list(LAYOUTS))
    device: str = 'cpu'
    threads: str = 'auto'
    sections: list[str] | None = None  # default: train and fused, with cuda also gpu
    use_compile: bool = False
    max_batch: int = 65536
    json_path: Path | None = None
    progress: bool = True

    def resolved_sections(self) -> list[str]:
        """The sections to run; raises InputError for ones this machine cannot run."""
        sections = self.sections or ['train', 'fused'] + (['gpu'] if self.device == 'cuda' else [])
        if self.device == 'cuda' and not torch.cuda.is_available():
            raise InputError(
                f'--device cuda: no usable GPU here (torch.cuda.is_available() is False; torch '
                f'{torch.__version__}, built for CUDA {torch.version.cuda or "none"}). Run on a '
                'machine with an NVIDIA GPU, or use --device cpu.')
        if 'gpu' in sections and self.device != 'cuda':
            raise InputError('the gpu section needs --device cuda')
        return sections


def _run_sections(settings: SpeedSettings, sections: list[str], threads: int,
                  workdir: Path) -> dict:
    report = {}
    if 'train' in sections:
        report['train'] = section_train(settings.archs, settings.train_repeats, settings.device,
                                        threads, settings.train_layouts, settings.progress)
    if 'fused' in sections:
        report['fused'] = section_fused(settings.archs, settings.repeats, settings.device,
                                        threads, settings.use_compile, workdir, settings.progress)
    if 'gpu' in sections:
        report['gpu'] = section_gpu(settings.archs, settings.max_batch)
    if 'with_cp' in sections:
        report['with_cp'] = section_with_cp(settings.archs, settings.train_repeats,
                                            settings.device, threads, settings.progress)
    return report


def check_json_path(path: Path) -> None:
    """Refuses a ``--json`` path that cannot take the report, before minutes of measuring.

    Its folder may not exist yet (it is created), but must be creatable and writable.

    Raises:
        InputError: ``path`` is a directory, lies under a file, or its folder is not writable.
    """
    if path.is_dir():
        raise InputError(f'--json {path} is a directory; pass a file path for the report (e.g. '
                         f'{path / "speed.json"}). Nothing was measured.')
    check_output_dir(path.parent, '--json folder')


def run_speed(settings: SpeedSettings, command: str = '') -> dict:
    """Prints the machine and every requested section; returns (and writes) the JSON report.

    Args:
        settings: What to measure.
        command: The command line, printed under the machine summary.
    """
    sections = settings.resolved_sections()
    if settings.json_path:
        check_json_path(Path(settings.json_path))
    threads, note = choose_threads(settings.threads)
    torch.set_num_threads(threads)
    machine = machine_summary(note, settings.device)
    print_machine(machine)
    print(f'Command: {command}\n')
    report = dict(machine=machine, args={k: str(v) for k, v in asdict(settings).items()})
    with tempfile.TemporaryDirectory(prefix='repnext_speed_') as workdir:  # the ONNX files
        report.update(_run_sections(settings, sections, threads, Path(workdir)))
    machine['load_average_end'] = [round(v, 2) for v in os.getloadavg()]
    print(f'Load average at the end: {machine["load_average_end"]}')
    if settings.json_path:
        atomic_write_json(report, settings.json_path, default=str)
        print(f'Wrote {settings.json_path}')
    return report
