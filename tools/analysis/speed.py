#!/usr/bin/env python
"""Speed and memory of RepNeXt's training and fused forms, measured side by side.

Sections (each prints a table; ``--json`` also writes every raw sample):

(a) ``train``: one backbone training step (forward + backward of the mean of every stage
    output, batch 16, 224x224, train-mode BN) in the fast training form
    (``srp_forward='merged'``: one depthwise conv per SRP branch set, its kernel rebuilt from the
    branch weights on every step) vs the literal multi-branch form (``'branches'``), in NCHW and
    channels_last memory format; time and peak-memory ratios. A third form, "SRP-free bound",
    replaces every SRP conv by a strided copy: no implementation of the SRP convolutions can beat
    it, so it bounds the attainable ratios.
(b) ``fused``: backbone forward at 512x512, batch 1: our full fusion (every branch merged,
    every BN folded) on several runtimes vs the authors' partial fusion (branches merged, the BN
    after every chunk / copy conv left standalone: built here from our modules) vs the unfused
    training form; and vs the compute floor ``2 x MACs / (GEMM FLOP/s)``, the GEMM rate
    measured in the same run by a large ``torch.matmul``.
(c) ``gpu`` (``--device cuda``): throughput at 224x224 with the paper's protocol (fused fp32,
    the largest power-of-two batch that fits, halving on out-of-memory).

Timing protocol: all variants of a table are run in round-robin (variant 1, 2, ..., 1, 2, ...)
after untimed warm-up rounds, so slow drifts in machine load hit every variant alike; each row
reports the median, and each ratio is the median of the per-round ratios (paired samples).

Usage::

    python tools/analysis/speed.py [--archs m1 m4] [--repeats N] [--train-repeats N]
        [--device cpu|cuda] [--threads auto|N] [--sections train fused gpu]
        [--train-layouts nchw channels_last] [--compile] [--max-batch N] [--json OUT]
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout, uninstalled

from repnext_mm.deploy.benchmark import count_macs, cuda_throughput, describe_cpu  # noqa: E402
from repnext_mm.models.backbones.repnext import (ConvNorm, RepDWConvM, RepDWConvS,  # noqa: E402
                                                 RepNeXt)

TRAIN_BATCH, TRAIN_SIZE = 16, 224
FUSED_BATCH, FUSED_SIZE = 1, 512
GPU_SIZE = 224
GEMM_SIZE = {'cpu': 2048, 'cuda': 8192}
# The memory workers set glibc's mmap threshold so that every tensor above 64 KiB gets its own
# mapping, returned to the OS when freed: the resident set then follows the live tensors instead
# of glibc's retained heap, and its high-water mark is the step's real peak.
MEMORY_WORKER_ENV = {'MALLOC_MMAP_THRESHOLD_': str(64 * 1024)}
MEMORY_METHOD = (
    'peak resident-set growth during one step (Linux VmHWM, reset through /proc/self/clear_refs '
    'after a warm-up step), each form in its own process with glibc MALLOC_MMAP_THRESHOLD_=64KiB '
    'so freed tensors leave the resident set; counts everything the step allocates (activations, '
    'gradients, workspaces), not the weights or the input; median of the measured steps')


# --------------------------------------------------------------------------------------------
# Machine, threads, progress
# --------------------------------------------------------------------------------------------
def choose_threads(requested: str) -> tuple[int, str]:
    """Resolves ``--threads``: a number, or ``auto`` = the cores not busy with other work.

    On a shared machine more threads than idle cores make every OpenMP region wait for a
    descheduled thread: steps were 5x slower with 2 threads than with 1 on 2 busy cores.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    if requested != 'auto':
        threads = int(requested)
        if threads < 1:
            raise SystemExit(f'--threads must be >= 1 or auto, got {requested}')
        return threads, 'as requested'
    load = os.getloadavg()[0]
    threads = max(1, min(cores, round(cores - load)))
    return threads, f'auto: {cores} cores, load average {load:.2f} from other work'


def machine_summary(threads_note: str, device: str) -> dict:
    info = dict(
        cpu=describe_cpu(),
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        threads_choice=threads_note,
        load_average=[round(v, 2) for v in os.getloadavg()],
        python=platform.python_version(),
        mkldnn=torch.backends.mkldnn.is_available(),
        device=device,
    )
    if device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
    return info


def print_machine(info: dict) -> None:
    print('Machine')
    for key, value in info.items():
        print(f'  {key:15s} {value}')
    print()


class Progress:
    """A rich progress bar when rich is installed, else MMEngine's, else nothing."""

    def __init__(self, total: int, description: str) -> None:
        self._bar = self._rich = None
        try:
            from rich.progress import Progress as RichProgress
            self._rich = RichProgress(transient=True)
            self._rich.start()
            self._task = self._rich.add_task(description, total=total)
        except ImportError:
            try:
                from mmengine.utils import ProgressBar
                print(description, flush=True)
                self._bar = ProgressBar(total)
            except ImportError:
                pass

    def advance(self) -> None:
        if self._rich is not None:
            self._rich.advance(self._task)
        elif self._bar is not None:
            self._bar.update()

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif self._bar is not None:
            print(flush=True)


def round_robin(variants: dict[str, Callable[[], object]], repeats: int, warmup: int,
                synchronize: Callable[[], None], description: str) -> dict[str, list[float]]:
    """Times every variant once per round, ``warmup`` untimed rounds then ``repeats`` timed."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    progress = Progress((warmup + repeats) * len(variants), description)
    try:
        for round_index in range(warmup + repeats):
            for name, fn in variants.items():
                synchronize()
                start = time.perf_counter()
                fn()
                synchronize()
                if round_index >= warmup:
                    samples[name].append(time.perf_counter() - start)
                progress.advance()
    finally:
        progress.close()
    return samples


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of ``numerator[i] / denominator[i]`` (samples from the same round)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def spread(samples: list[float]) -> str:
    return f'{min(samples) * 1e3:.0f}-{max(samples) * 1e3:.0f}'


# --------------------------------------------------------------------------------------------
# (a) training step
# --------------------------------------------------------------------------------------------
class StridedCopy(nn.Module):
    """Stands in for an SRP conv in the bound model: same output shape, the least possible work
    (one strided copy) and nothing saved for backward."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[..., ::self.stride, ::self.stride].clone()


def srp_free(model: RepNeXt) -> RepNeXt:
    """The backbone with every SRP conv replaced by :class:`StridedCopy` (a lower bound)."""
    model = copy.deepcopy(model)
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, (RepDWConvS, RepDWConvM))]
    for name, module in targets:
        parent_name, _, attr = name.rpartition('.')
        setattr(model.get_submodule(parent_name), attr, StridedCopy(module.stride))
    return model


LAYOUTS = {'nchw': torch.contiguous_format, 'channels_last': torch.channels_last}
TRAIN_FORMS = {'merged': "srp_forward='merged'",
               'branches': "srp_forward='branches' (literal)",
               'srp-free': 'SRP-free bound'}


def build_training_model(arch: str, form: str, layout: str, device: str = 'cpu') -> RepNeXt:
    model = RepNeXt(arch, srp_forward='merged' if form == 'srp-free' else form)
    if form == 'srp-free':
        model = srp_free(model)
    return model.train().to(device=device, memory_format=LAYOUTS[layout])


def training_inputs(layout: str, device: str = 'cpu') -> Tensor:
    inputs = torch.randn(TRAIN_BATCH, 3, TRAIN_SIZE, TRAIN_SIZE, device=device)
    return inputs.contiguous(memory_format=LAYOUTS[layout])


def training_step(model: nn.Module, inputs: Tensor) -> None:
    model.zero_grad(set_to_none=True)
    outputs = model(inputs)
    sum(out.float().mean() for out in outputs).backward()


def _proc_status_bytes(key: str) -> int:
    with open('/proc/self/status', encoding='utf-8') as status:
        for line in status:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'{key} not in /proc/self/status')


def memory_worker(arch: str, form: str, layout: str, threads: int, steps: int) -> None:
    """Subprocess entry: prints the JSON list of per-step peak memory growths in bytes."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_training_model(arch, form, layout)
    inputs = training_inputs(layout)
    training_step(model, inputs)  # warm-up: one-time allocations (kernel caches, ...) excluded
    peaks = []
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        gc.collect()
        with open('/proc/self/clear_refs', 'w', encoding='utf-8') as clear_refs:
            clear_refs.write('5')  # resets the peak resident set size (VmHWM) to the current one
        base = _proc_status_bytes('VmRSS')
        training_step(model, inputs)
        peaks.append(_proc_status_bytes('VmHWM') - base)
    print(json.dumps(peaks))


def measure_training_memory(arch: str, form: str, layout: str, threads: int,
                            steps: int = 1) -> list[int] | None:
    """Runs :func:`memory_worker` in a fresh process; None where /proc is unavailable."""
    if not Path('/proc/self/clear_refs').exists():
        return None
    command = [sys.executable, __file__, '--memory-worker', arch, form, layout, str(threads),
               str(steps)]
    result = subprocess.run(command, env={**os.environ, **MEMORY_WORKER_ENV}, capture_output=True,
                            text=True, check=False)
    if result.returncode:
        print(f'  memory worker for {arch}/{form}/{layout} failed:\n{result.stderr[-2000:]}')
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def cuda_training_memory(model: nn.Module, inputs: Tensor) -> int:
    torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    training_step(model, inputs)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def section_train(archs: list[str], repeats: int, device: str, threads: int,
                  layouts: list[str]) -> dict:
    print(f'(a) Training step: backbone forward + backward, batch {TRAIN_BATCH}, '
          f'{TRAIN_SIZE}x{TRAIN_SIZE}, train-mode BN, {device}; layouts: {", ".join(layouts)}')
    print('    SRP-free bound: every SRP conv replaced by a strided copy; no implementation of the '
          'SRP convs can be faster or smaller')
    if device == 'cpu':
        print(f'    memory: {MEMORY_METHOD}')
    else:
        print('    memory: torch.cuda.max_memory_allocated() growth during one step')
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    results = {}
    for arch in archs:
        torch.manual_seed(0)
        reference = RepNeXt(arch).state_dict()
        models, inputs = {}, {}
        for layout in layouts:
            inputs[layout] = training_inputs(layout, device)
            for form in TRAIN_FORMS:
                model = build_training_model(arch, form, layout, device)
                if form != 'srp-free':
                    model.load_state_dict(reference, strict=True)
                models[form, layout] = model
        times = round_robin({key: (lambda m=m, x=inputs[key[1]]: training_step(m, x))
                             for key, m in models.items()},
                            repeats, warmup=1, synchronize=sync, description=f'{arch} training steps')
        memory = {}
        for (form, layout), model in models.items():
            if device == 'cuda':
                memory[form, layout] = [cuda_training_memory(model, inputs[layout])]
            else:
                memory[form, layout] = measure_training_memory(arch, form, layout, threads)
        del models
        gc.collect()

        def peak(key) -> float | None:
            return statistics.median(memory[key]) if memory[key] else None

        print(f'\n  {arch.upper()} (load average now {os.getloadavg()[0]:.2f})')
        print(f'  {"form":34s} {"layout":14s} {"median s":>9s} {"range ms":>13s} {"peak MiB":>9s}')
        for (form, layout), samples in times.items():
            mib = f'{peak((form, layout)) / 2**20:9.0f}' if peak((form, layout)) else '      n/a'
            print(f'  {TRAIN_FORMS[form]:34s} {layout:14s} {statistics.median(samples):9.2f} '
                  f'{spread(samples):>13s} {mib}')
        summary = dict(times_s={'/'.join(k): v for k, v in times.items()},
                       memory_bytes={'/'.join(k): v for k, v in memory.items()})
        for layout in layouts:
            merged, branches, bound = (times[form, layout] for form in TRAIN_FORMS)
            entry = dict(speedup=paired_ratio(branches, merged),
                         speedup_bound=paired_ratio(branches, bound))
            line = (f'  {layout}: merged is {entry["speedup"]:.2f}x faster than branches '
                    f'(target >= 1.5x; SRP-free bound {entry["speedup_bound"]:.2f}x)')
            peaks = [peak((form, layout)) for form in TRAIN_FORMS]
            if all(peaks):
                entry.update(memory_ratio=peaks[0] / peaks[1], memory_ratio_bound=peaks[2] / peaks[1])
                line += (f'; memory merged / branches {entry["memory_ratio"]:.2f} (target <= 0.75; '
                         f'bound {entry["memory_ratio_bound"]:.2f})')
            print(line)
            summary[layout] = entry
        if 'nchw' in layouts and 'channels_last' in layouts:
            summary['merged_channels_last_vs_branches_nchw'] = paired_ratio(
                times['branches', 'nchw'], times['merged', 'channels_last'])
            summary['channels_last_gain_merged'] = paired_ratio(
                times['merged', 'nchw'], times['merged', 'channels_last'])
            print(f'  merged + channels_last vs literal branches in NCHW: '
                  f'{summary["merged_channels_last_vs_branches_nchw"]:.2f}x faster; channels_last '
                  f'alone speeds the merged form up {summary["channels_last_gain_merged"]:.2f}x')
        results[arch] = summary
    print()
    return results


# --------------------------------------------------------------------------------------------
# (b) fused forms at 512x512
# --------------------------------------------------------------------------------------------
def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def authors_partial_fusion(model: RepNeXt) -> RepNeXt:
    """The authors' fuse: SRP branch sets merged and conv+BN pairs folded, but the BN after each
    chunk conv (blocks) and copy conv (downsamples) left standalone."""
    model = copy.deepcopy(model).eval()
    for module in [m for m in model.modules() if isinstance(m, (RepDWConvS, RepDWConvM, ConvNorm))]:
        module.switch_to_deploy()
    return model


class OnnxRuntimeModel:
    """A CPU ONNX Runtime session of a module, called like the module (numpy in, numpy out)."""

    def __init__(self, module: nn.Module, example: Tensor, threads: int, path: Path) -> None:
        import onnxruntime as ort
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the TorchScript exporter's deprecation notices
            torch.onnx.export(module, (example,), str(path), input_names=['input'],
                              opset_version=17, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        self.feed = {'input': example.numpy()}

    def __call__(self) -> list:
        return self.session.run(None, self.feed)


def build_fused_variants(arch: str, device: str, threads: int, use_compile: bool,
                         workdir: Path) -> tuple[dict[str, Callable[[], object]], dict]:
    """Returns ``{label: zero-arg forward}`` and facts about the models (MACs, BN counts)."""
    torch.manual_seed(0)
    unfused = RepNeXt(arch, srp_forward='branches').eval()
    with torch.no_grad():  # non-trivial BN statistics so every fold does real work
        for module in unfused.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    partial = authors_partial_fusion(unfused)
    fused = copy.deepcopy(unfused)
    fused.switch_to_deploy()
    unfused, partial, fused = (m.to(device) for m in (unfused, partial, fused))

    x = torch.randn(FUSED_BATCH, 3, FUSED_SIZE, FUSED_SIZE, device=device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fused_cl = copy.deepcopy(fused).to(memory_format=torch.channels_last)
    facts = dict(gmacs_fused=count_macs(fused, x) / 1e9, bn_unfused=count_batchnorms(unfused),
                 bn_partial=count_batchnorms(partial), bn_fused=count_batchnorms(fused))

    def eager(module: nn.Module, inputs: Tensor) -> Callable[[], object]:
        def forward():
            with torch.inference_mode():
                return module(inputs)
        return forward

    variants = {
        'unfused (training form, eval)': eager(unfused, x),
        "authors' partial fusion, eager": eager(partial, x),
        'full fusion, eager NCHW': eager(fused, x),
        'full fusion, eager channels_last': eager(fused_cl, x_cl),
    }
    if device == 'cpu':
        with torch.no_grad():
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(
                torch.jit.trace(fused, x, check_trace=False).eval()))
        variants['full fusion, TorchScript frozen'] = eager(frozen, x)
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print('  (onnxruntime not installed: ONNX Runtime rows skipped)')
        else:
            variants["authors' partial fusion, ONNX Runtime"] = OnnxRuntimeModel(
                partial, x, threads, workdir / f'{arch}_partial.onnx')
            variants['full fusion, ONNX Runtime'] = OnnxRuntimeModel(
                fused, x, threads, workdir / f'{arch}_fused.onnx')
    if use_compile:
        import torch._inductor.config as inductor_config
        inductor_config.freezing = True  # constant-fold the weights into the compiled graph
        compiled = torch.compile(copy.deepcopy(fused_cl))
        variants['full fusion, torch.compile (channels_last)'] = eager(compiled, x_cl)

    # Every variant must compute the same function (checked once, before timing).
    reference = variants['unfused (training form, eval)']()
    for label, fn in variants.items():
        outputs = fn()
        for out, ref in zip(outputs, reference):
            out = torch.as_tensor(out).to(ref.device)
            error = ((out - ref).abs().max() / ref.abs().max()).item()
            if error > 1e-4:
                raise RuntimeError(f'{arch}: {label} differs from the unfused model '
                                   f'(max rel. error {error:.1e})')
    return variants, facts


def gemm_callable(device: str) -> tuple[Callable[[], object], float]:
    """A large square fp32 matmul and its FLOP count (the machine's dense compute rate)."""
    n = GEMM_SIZE[device]
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    return (lambda: torch.matmul(a, b)), 2.0 * n ** 3


def section_fused(archs: list[str], repeats: int, device: str, threads: int,
                  use_compile: bool, workdir: Path) -> dict:
    print(f'(b) Fused backbone forward, batch {FUSED_BATCH}, {FUSED_SIZE}x{FUSED_SIZE}, {device}')
    results = {}
    for arch in archs:
        variants, facts = build_fused_variants(arch, device, threads, use_compile, workdir)
        gemm, gemm_flop = gemm_callable(device)
        sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
        times = round_robin({**variants, 'GEMM': gemm}, repeats, warmup=2, synchronize=sync,
                            description=f'{arch} fused forwards')
        gemm_rate = gemm_flop / statistics.median(times.pop('GEMM'))
        floor_s = 2 * facts['gmacs_fused'] * 1e9 / gemm_rate

        full = [label for label in variants if label.startswith('full fusion')]
        best = min(full, key=lambda label: statistics.median(times[label]))
        unfused, partial = times['unfused (training form, eval)'], times["authors' partial fusion, eager"]
        print(f'\n  {arch.upper()}: {facts["gmacs_fused"]:.2f} GMACs fused; BatchNorms: unfused '
              f'{facts["bn_unfused"]}, partial {facts["bn_partial"]}, full {facts["bn_fused"]}; '
              f'GEMM {gemm_rate / 1e9:.1f} GFLOP/s -> compute floor {floor_s * 1e3:.1f} ms '
              f'(load average now {os.getloadavg()[0]:.2f})')
        print(f'  {"variant":44s} {"median ms":>9s} {"range ms":>11s} {"vs unfused":>10s} '
              f'{"vs partial":>10s} {"x floor":>7s}')
        for label, samples in times.items():
            median = statistics.median(samples)
            mark = '  <- best' if label == best else ''
            print(f'  {label:44s} {median * 1e3:9.1f} {spread(samples):>11s} '
                  f'{paired_ratio(unfused, samples):9.2f}x {paired_ratio(partial, samples):9.2f}x '
                  f'{median / floor_s:7.1f}{mark}')
        summary = dict(times_s=times, facts=facts, gemm_flops=gemm_rate, floor_s=floor_s, best=best,
                       best_vs_partial_eager=paired_ratio(partial, times[best]),
                       best_vs_unfused=paired_ratio(unfused, times[best]),
                       eager_vs_partial_eager=paired_ratio(partial, times['full fusion, eager NCHW']))
        partial_ort = "authors' partial fusion, ONNX Runtime"
        if partial_ort in times:
            summary['ort_full_vs_ort_partial'] = paired_ratio(times[partial_ort],
                                                              times['full fusion, ONNX Runtime'])
        print(f'  best ({best}): {summary["best_vs_partial_eager"]:.2f}x faster than the authors\' '
              f'partial fusion in eager PyTorch, {summary["best_vs_unfused"]:.2f}x faster than unfused; '
              f'{statistics.median(times[best]) / floor_s:.1f}x the compute floor')
        print(f'  same runtime: full vs partial fusion, eager {summary["eager_vs_partial_eager"]:.2f}x'
              + (f', ONNX Runtime {summary["ort_full_vs_ort_partial"]:.2f}x'
                 if 'ort_full_vs_ort_partial' in summary else ''))
        results[arch] = summary
        del variants
        gc.collect()
    print()
    return results


# --------------------------------------------------------------------------------------------
# (c) GPU throughput
# --------------------------------------------------------------------------------------------
def section_gpu(archs: list[str], max_batch: int) -> dict:
    print(f'(c) GPU throughput, fused fp32, {GPU_SIZE}x{GPU_SIZE}, largest power-of-two batch '
          f'that fits (from {max_batch}, halving on out-of-memory)')
    results = {}
    for arch in archs:
        model = RepNeXt(arch).eval()
        model.switch_to_deploy()
        result = cuda_throughput(model, (GPU_SIZE, GPU_SIZE), max_batch=max_batch, progress=False)
        timing = result['timing']
        print(f'  {arch.upper()}: batch {result["batch_size"]}, {result["images_per_s"]:.0f} images/s '
              f'(median {timing.median_ms:.1f} ms per batch over {timing.runs} runs)')
        results[arch] = dict(batch_size=result['batch_size'], images_per_s=result['images_per_s'],
                             timing=timing.as_dict())
        del model
        torch.cuda.empty_cache()
    print()
    return results


# --------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--archs', nargs='+', default=['m1', 'm4'], choices=sorted(RepNeXt.arch_settings))
    parser.add_argument('--repeats', type=int, default=7,
                        help='timed rounds of the fused-forward tables (default 7)')
    parser.add_argument('--train-repeats', type=int, default=3,
                        help='timed rounds of the training-step tables (default 3; a step takes '
                             'seconds)')
    parser.add_argument('--train-layouts', nargs='+', choices=tuple(LAYOUTS),
                        default=list(LAYOUTS), help='memory formats of (a) (default: both)')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--threads', default='auto',
                        help="torch / ONNX Runtime intra-op threads, or 'auto' (default): the cores "
                             'left idle by other work, at least 1')
    parser.add_argument('--sections', nargs='+', choices=('train', 'fused', 'gpu'),
                        help='default: train and fused; with --device cuda also gpu')
    parser.add_argument('--compile', action='store_true',
                        help='add a torch.compile row to (b) (minutes of compilation per arch)')
    parser.add_argument('--max-batch', type=int, default=65536,
                        help='(c) first batch size tried, halved until one fits (default 65536)')
    parser.add_argument('--json', type=Path, help='write all samples and summaries here')
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.train_repeats < 1:
        parser.error('--repeats and --train-repeats must be >= 1')
    if args.sections is None:
        args.sections = ['train', 'fused'] + (['gpu'] if args.device == 'cuda' else [])
    return args


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == '--memory-worker':
        arch, form, layout, threads, steps = sys.argv[2:7]
        memory_worker(arch, form, layout, int(threads), int(steps))
        return 0
    args = parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        print(f'--device cuda: no usable GPU here (torch.cuda.is_available() is False; torch '
              f'{torch.__version__}, built for CUDA {torch.version.cuda or "none"}). Run on a '
              'machine with an NVIDIA GPU, or use --device cpu.', file=sys.stderr)
        return 1
    if 'gpu' in args.sections and args.device != 'cuda':
        print('the gpu section needs --device cuda', file=sys.stderr)
        return 1
    threads, note = choose_threads(args.threads)
    torch.set_num_threads(threads)
    machine = machine_summary(note, args.device)
    print_machine(machine)
    print('Command: ' + ' '.join([Path(sys.executable).name, *sys.argv]) + '\n')

    report = dict(machine=machine, args={k: str(v) for k, v in vars(args).items()})
    workdir = Path(os.environ.get('TMPDIR', '/tmp')) / f'repnext_speed_{os.getpid()}'
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if 'train' in args.sections:
            report['train'] = section_train(args.archs, args.train_repeats, args.device, threads,
                                            args.train_layouts)
        if 'fused' in args.sections:
            report['fused'] = section_fused(args.archs, args.repeats, args.device, threads,
                                            args.compile, workdir)
        if 'gpu' in args.sections:
            report['gpu'] = section_gpu(args.archs, args.max_batch)
    finally:
        for path in workdir.glob('*.onnx'):
            path.unlink()
        workdir.rmdir()
    report['machine']['load_average_end'] = [round(v, 2) for v in os.getloadavg()]
    print(f'Load average at the end: {report["machine"]["load_average_end"]}')
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f'Wrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
