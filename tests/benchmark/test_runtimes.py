"""Runners and thread settings: ONNX Runtime and OpenVINO reproduce torch, threads as asked."""
import sys

import pytest
import torch

from repnext_mm.benchmark.runtimes import (choose_threads, export_onnxruntime_runner,
                                           onnxruntime_runner, openvino_runner,
                                           set_threads, torch_runner, torch_threads)
from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.imports import require
from tests.helpers import (TINY_ARCH, TINY_OUTPUTS, max_rel_error, randomize_norms,
                           requires_onnxruntime, requires_openvino)


def _assert_reproduces(actual: list, expected: tuple) -> None:
    assert [tuple(a.shape) for a in actual] == [tuple(e.shape) for e in expected]
    for out, ref in zip(actual, expected):
        assert max_rel_error(torch.from_numpy(out), ref) < 1e-4


@requires_onnxruntime
def test_onnxruntime_runner_reproduces_torch(tiny_onnx):
    model, x, path = tiny_onnx
    _assert_reproduces(onnxruntime_runner(path, x, threads=1)(), torch_runner(model, x)())


@requires_onnxruntime
def test_export_onnxruntime_runner_exports_and_runs(tmp_path):
    model = randomize_norms(RepNeXt(TINY_ARCH)).eval()
    model.switch_to_deploy()
    x = torch.randn(1, 3, 32, 32)
    runner = export_onnxruntime_runner(model, x, tmp_path / 'tiny.onnx', TINY_OUTPUTS, threads=1)
    assert (tmp_path / 'tiny.onnx').is_file()
    _assert_reproduces(runner(), torch_runner(model, x)())


@requires_onnxruntime  # tiny_onnx's export
@requires_openvino
def test_openvino_runner_reproduces_torch_on_the_same_onnx_file(tiny_onnx):
    model, x, path = tiny_onnx
    run = openvino_runner(path, x, threads=1)
    first = run()
    _assert_reproduces(first, torch_runner(model, x)())
    # Copies, not views of OpenVINO's output buffers that the next call would overwrite.
    assert all(a is not b for a, b in zip(first, run()))


@pytest.mark.parametrize('module, require, install', [
    ('openvino', lambda: require('openvino', 'timing'), 'pip install openvino'),
    ('onnxruntime', lambda: require('onnxruntime', 'timing'), 'pip install onnxruntime')])
def test_a_missing_runtime_is_one_error_naming_the_install(monkeypatch, module, require, install):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` fail
    with pytest.raises(InputError, match=install) as error:
        require()
    assert '\n' not in str(error.value)


def test_torch_runner_returns_outputs_without_autograd():
    model = torch.nn.Linear(3, 2)
    out = torch_runner(model, torch.randn(4, 3))()
    assert out.shape == (4, 2) and not out.requires_grad


def test_torch_threads_sets_and_restores_the_count():
    before = torch.get_num_threads()
    target = 2 if before == 1 else 1
    with torch_threads(target) as threads:
        assert threads == target == torch.get_num_threads()
    assert torch.get_num_threads() == before


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
