"""Runners and thread settings: ONNX Runtime reproduces torch, threads are applied as asked."""
import pytest
import torch

from repnext_mm.benchmark.runtimes import (choose_threads, export_onnxruntime_runner,
                                           onnxruntime_session, set_threads, torch_runner)
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.utils.errors import InputError
from tests.helpers import max_rel_error, randomize_norms

pytest.importorskip('onnxruntime', reason='onnxruntime is not installed (tools/setup_env.sh)')

TINY = dict(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1))


def test_onnxruntime_runner_reproduces_torch(tmp_path):
    model = randomize_norms(RepNeXt(TINY)).eval()
    model.switch_to_deploy()
    x = torch.randn(2, 3, 32, 32)
    expected = torch_runner(model, x)()
    names = ['stage0', 'stage1', 'stage2', 'stage3']
    actual = export_onnxruntime_runner(model, x, tmp_path / 'tiny.onnx', names, threads=1)()
    assert [tuple(a.shape) for a in actual] == [tuple(e.shape) for e in expected]
    for out, ref in zip(actual, expected):
        assert max_rel_error(torch.from_numpy(out), ref) < 1e-4


def test_onnxruntime_session_uses_the_requested_threads(tmp_path):
    model = torch.nn.Conv2d(3, 4, 3).eval()
    path = tmp_path / 'conv.onnx'
    torch.onnx.export(model, (torch.randn(1, 3, 8, 8),), str(path), input_names=['input'],
                      opset_version=17, dynamo=False)
    options = onnxruntime_session(path, threads=1).get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1


def test_torch_runner_returns_outputs_without_autograd():
    model = torch.nn.Linear(3, 2)
    out = torch_runner(model, torch.randn(4, 3))()
    assert out.shape == (4, 2) and not out.requires_grad


def test_thread_choices():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        assert set_threads(None) == 1
    finally:
        torch.set_num_threads(before)
    assert choose_threads('3') == (3, 'as requested')
    threads, note = choose_threads('auto')
    assert threads >= 1 and note.startswith('auto: ')
    for bad in ('0', 'two'):
        with pytest.raises(InputError, match='--threads must be >= 1 or auto'):
            choose_threads(bad)
    with pytest.raises(InputError, match='--threads must be >= 1'):
        set_threads(0)
