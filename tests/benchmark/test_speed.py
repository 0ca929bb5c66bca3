"""The speed report's sections on a tiny backbone: tables, paired summaries, settings errors."""
import pytest
import torch

from repnext_mm.benchmark import fused, speed
from repnext_mm.benchmark.speed import SpeedSettings, fused_arch, train_arch, with_cp_arch
from repnext_mm.benchmark.timing import paired_ratio, round_robin
from repnext_mm.utils.errors import InputError
from tests.helpers import requires_onnxruntime, requires_openvino

TINY = dict(widths=[8, 16, 32, 64], depths=[1, 1, 1, 1])
# Fake peak memory per form (bytes): merged and the bound below the literal branches.
PEAKS = {'merged': 3 * 2**20, 'branches': 4 * 2**20, 'srp-free': 3 * 2**20}


@pytest.mark.slow  # times training steps of every form
def test_training_section_prints_every_form_and_the_paired_ratios(monkeypatch, capsys):
    monkeypatch.setattr(speed, 'measure_training_memory',
                        lambda case, threads: [PEAKS[case.form]])
    summary = train_arch(TINY, repeats=2, device='cpu', threads=1,
                         layouts=['nchw', 'channels_last'], batch_size=2, image_size=32,
                         progress=False)
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines() if line.startswith('  srp_forward=')
            or line.startswith('  SRP-free bound ')]
    assert rows == ["srp_forward='merged'", "srp_forward='branches'", 'SRP-free'] * 2
    assert 'nchw: merged is' in out and 'memory merged / branches 0.75' in out
    assert 'merged + channels_last vs literal branches in NCHW' in out
    assert len(summary['times_s']) == 6 and all(len(v) == 2 for v in summary['times_s'].values())
    assert summary['nchw']['memory_ratio'] == pytest.approx(0.75)
    assert summary['nchw']['speedup'] > 0 and 'channels_last_gain_merged' in summary


@pytest.mark.slow  # times training steps with and without checkpointing
def test_with_cp_section_compares_the_step_with_and_without_checkpointing(monkeypatch, capsys):
    cases = []

    def fake_memory(case, threads):  # checkpointing at a quarter of the plain step's peak
        cases.append(case)
        return [2**20 if case.with_cp else 4 * 2**20]

    monkeypatch.setattr(speed, 'measure_training_memory', fake_memory)
    summary = with_cp_arch(TINY, repeats=2, device='cpu', threads=1, batch_size=2,
                           image_size=(32, 64), progress=False)
    out = capsys.readouterr().out
    assert 'batch x height x width 2x32x64' in out
    rows = [line.split()[1] for line in out.splitlines() if line.startswith('  srp_forward=')]
    assert rows == ['False', 'True']
    assert [case.with_cp for case in cases] == [False, True]
    assert all(case.image_size == (32, 64) and case.form == 'merged' for case in cases)
    assert summary['memory_ratio'] == pytest.approx(0.25) and summary['time_ratio'] > 0
    assert 'with_cp / without: step time' in out and 'peak memory 0.25x' in out
    assert all(len(v) == 2 for v in summary['times_s'].values())


@requires_onnxruntime
@requires_openvino
def test_fused_section_times_every_variant_against_the_floor(monkeypatch, small_gemm, tmp_path,
                                                            capsys):
    rounds = []

    def spy_round_robin(functions, *args, **kwargs):
        rounds.append((list(functions), torch.get_num_threads()))
        return round_robin(functions, *args, **kwargs)

    monkeypatch.setattr(speed, 'round_robin', spy_round_robin)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # fused_arch must pin torch (and the GEMM) to threads=1 itself
    try:
        summary = fused_arch(TINY, repeats=2, device='cpu', threads=1, use_compile=False,
                             workdir=tmp_path, size=32, progress=False)
    finally:
        torch.set_num_threads(previous)
    out = capsys.readouterr().out
    assert 'BatchNorms: unfused' in out and 'partial 7, full 0' in out
    assert 'GFLOP/s (threads=1) -> compute floor' in out
    assert out.count('  <- best') == 1 and 'same runtime: full vs partial fusion' in out
    assert 'same ONNX file: OpenVINO takes' in out and 0 < summary['openvino_time_vs_ort']
    # the GEMM ran in the same round-robin as every variant, at the variants' thread count
    [(names, threads)] = rounds
    assert names == [*summary['times_s'], fused.GEMM] and threads == 1
    assert fused.FULL_OPENVINO in names and fused.FULL_ORT in names
    floor = fused.floor_samples(summary['facts']['gmacs_fused'] * 1e9, summary['gemm_s'],
                                small_gemm)
    best = summary['times_s'][summary['best']]
    assert summary['best_x_floor'] == pytest.approx(paired_ratio(best, floor))
    assert summary['best'].startswith('full fusion') and summary['floor_s'] > 0
    assert 'ort_full_vs_ort_partial' in summary


def test_settings_refuse_what_this_machine_cannot_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(InputError, match='--device cuda: no usable GPU'):
        SpeedSettings(device='cuda').resolved_sections()
    with pytest.raises(InputError, match='gpu section needs --device cuda'):
        SpeedSettings(sections=['gpu']).resolved_sections()
    assert SpeedSettings().resolved_sections() == ['train', 'fused']
