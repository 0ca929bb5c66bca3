"""Shared test utilities: the repository root, the shapes configs, optional-package skips and
the two ways of running a tool (in-process and in a fresh process).

Fixtures live in ``tests/conftest.py``; everything a test module imports lives here.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterable

import pytest
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

#: The repository root (the checkout the tests run from).
REPO = Path(__file__).resolve().parents[1]

#: The real shapes configs, one per task (small images, so the tests stay fast).
SHAPES_CONFIGS = dict(
    classifier=REPO / 'configs/mmpretrain/repnext_m0_shapes.py',
    detector=REPO / 'configs/mmdet/mask_rcnn_repnext_m0_fpn_shapes.py',
    segmentor=REPO / 'configs/mmseg/fpn_repnext_m0_shapes.py',
)
#: Input sizes for checks on :data:`SHAPES_CONFIGS`: each config's image size.
SHAPES_INPUT_SIZES = dict(classifier=(64, 64), detector=(128, 128), segmentor=(128, 128))

#: A tiny custom RepNeXt arch (every stage, one block each) and its output names.
TINY_ARCH = dict(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1))
TINY_OUTPUTS = ['stage0', 'stage1', 'stage2', 'stage3']
#: Side of the floor's matmul in tests: the same code path as 2048 in a fraction of the time.
SMALL_GEMM = 128


# ---------------------------------------------------------------------------------------------
# Optional packages: a skip on exactly the tests that need one, saying why and how to install it.
# tools/setup_env.sh installs every one of them (requirements/runtime.txt; mmcv with its ops), so
# nothing skips in a full environment. Only a package that is absent skips: one that is installed
# but fails to import fails the tests that need it. What the stack itself requires (opencv and
# matplotlib come with mmengine, model-index with mmpretrain and openmim) is imported directly.
# ---------------------------------------------------------------------------------------------
def is_installed(module: str) -> bool:
    """Whether ``module`` can be found, without importing it (its parent package, if dotted)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent, or ``sys.modules[module] = None``
        return False


def requires(module: str, package: str, needed_for: str,
             install: str | None = None) -> pytest.MarkDecorator:
    """A ``skipif`` for tests that need ``module`` (from the pip ``package``) for ``needed_for``."""
    install = install or f'pip install {package} -c requirements/constraints.txt'
    return pytest.mark.skipif(not is_installed(module),
                              reason=f'{package} is not installed ({needed_for}; {install})')


requires_onnxruntime = requires('onnxruntime', 'onnxruntime',
                                'the ONNX export checks its outputs with it; a backend of the timings')
requires_openvino = requires('openvino', 'openvino', 'the OpenVINO backend runs with it')
requires_grad_cam = requires('pytorch_grad_cam', 'grad-cam', 'it computes and draws the CAMs')
requires_mmcv_ops = requires('mmcv._ext', 'mmcv (with its compiled ops)',
                             'mmdet and mmseg models need them',
                             install='rerun tools/setup_env.sh (mmcv-lite has no ops)')


def first_quick_rest_slow(values: Iterable) -> list:
    """``values`` for ``parametrize``: the first one in the quick tier, the others marked ``slow``.

    For sweeps over archs or configs where each case runs the same code on a bigger model: the
    quick tier (``-m "not slow"``) checks that code once, on the first (smallest) value; the full
    suite checks every value. The test ids are those of plain values.
    """
    values = list(values)
    return values[:1] + [pytest.param(value, marks=pytest.mark.slow) for value in values[1:]]


def load_tool(relative_path: str) -> ModuleType:
    """Imports ``tools/...py`` by path, once per process (``tools`` is not a package)."""
    name = 'tool_' + relative_path.replace('/', '_').removesuffix('.py')
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_tool(relative_path: str, argv: list, capsys) -> tuple[int, str, str]:
    """Runs ``tools/...py``'s ``main(argv)`` in-process as its ``__main__`` does (``run_cli``).

    Much faster than a subprocess, which would re-import torch and the OpenMMLab stack.

    Returns:
        ``(exit status, stdout, stderr)``; an InputError is status 2 and one stderr line.
    """
    from repnext_mm.cli import run_cli

    capsys.readouterr()  # drop anything printed before
    status = run_cli(load_tool(relative_path).main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_tool_process(script: str | Path, *args: str | Path, cwd: Path = REPO,
                     env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Runs ``tools/...py`` with this interpreter (``tools/...sh`` with bash) in a fresh process.

    Only for what needs one: what a user sees of a whole process (its exact stderr), multi-process
    launches, or a tool run next to an in-process one; everything else uses :func:`run_tool`.
    The process gets one OpenMP thread unless ``OMP_NUM_THREADS`` is set (on 2 shared cores, 2
    threads per process make a training step up to 10x slower), the checkout on ``PYTHONPATH``
    and this interpreter as ``PYTHON`` (for the shell scripts); ``env`` overrides any of it.

    Returns:
        The finished process, its stdout and stderr as text.
    """
    command = [str(script), *(str(a) for a in args)]
    if command[0].endswith('.py'):
        command = [sys.executable, *command]
    elif command[0].endswith('.sh'):
        command = ['bash', *command]
    full_env = {'OMP_NUM_THREADS': '1', **os.environ, 'PYTHONPATH': str(REPO),
                'PYTHON': sys.executable, **(env or {})}
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def free_port() -> int:
    """A TCP port that is free now, for a multi-process run's rendezvous (``PORT``)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def describe_process(result: subprocess.CompletedProcess) -> str:
    """A finished process's exit status and the ends of its output, for assertion messages."""
    return (f'exit {result.returncode}\n--- stdout ---\n{result.stdout[-3000:]}\n'
            f'--- stderr ---\n{result.stderr[-5000:]}')


@torch.no_grad()
def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Gives every BatchNorm non-trivial statistics and affine parameters.

    At the default init (mean 0, var 1, weight 1, bias 0) a BN is almost the identity and a wrong
    fusion can still pass an equality test; these values make every fold matter.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return model


def max_rel_error(actual: Tensor, expected: Tensor) -> float:
    """Max absolute difference relative to the largest magnitude of ``expected``."""
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


def write_shape_images(folder: Path, count: int, size: int = 64, seed: int = 0) -> list[Path]:
    """``count`` shapes images in class folders (``folder/<class>/NNN.png``), classes in turn."""
    import cv2
    import numpy as np

    from repnext_mm.datasets.shapes import CLASSES, render_single

    paths = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        label = index % len(CLASSES)
        image, _ = render_single(rng, size, label)
        path = folder / CLASSES[label] / f'{index:03d}.png'
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def single_error_line(stderr: str) -> str:
    """The one ``error:`` line of a tool's stderr; fails on a traceback or on 0 or 2+ errors.

    Other stderr lines (log notes) are allowed; a refused tool prints exactly one error.
    """
    assert 'Traceback' not in stderr, stderr[-5000:]
    errors = [line for line in stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1, stderr[-5000:]
    return errors[0]


def write_onnx_graph(path: Path, metadata: dict[str, str] | None = None,
                     outputs: dict[str, tuple[int, list[int]]] | None = None,
                     input_shape: tuple[int, int] = (8, 8)) -> Path:
    """A minimal ``.onnx`` file: ``input [1, 3, H, W]`` and outputs of zeros of the given
    ``{name: (onnx TensorProto type, shape)}`` (default one float ``y`` = relu(input)), with
    ``metadata`` as its ``metadata_props``. For tests of what reads deployed files.

    An output whose first dimension is 0 is computed as a real graph computes an empty result
    (a gather of no indices, its length data dependent): OpenVINO turns a *constant* empty
    output into a scalar.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def constant(name: str, value: np.ndarray) -> onnx.NodeProto:
        return helper.make_node('Constant', [], [name], value=numpy_helper.from_array(value, name))

    height, width = input_shape
    # no_index: the indices where max(input) * 0 > 1, i.e. none, of a data-dependent length
    nodes = [helper.make_node('ReduceMax', ['input'], ['peak'], keepdims=0),
             constant('zero', np.array(0, np.float32)), constant('one', np.array(1, np.float32)),
             helper.make_node('Mul', ['peak', 'zero'], ['nothing']),
             helper.make_node('Greater', ['nothing', 'one'], ['never']),
             constant('one_axis', np.array([0], np.int64)),
             helper.make_node('Unsqueeze', ['never', 'one_axis'], ['never_1d']),
             helper.make_node('NonZero', ['never_1d'], ['found']),
             helper.make_node('Squeeze', ['found', 'one_axis'], ['no_index'])]
    infos = []
    for name, (kind, shape) in (outputs or {}).items():
        dtype = helper.tensor_dtype_to_np_dtype(kind)
        if shape and shape[0] == 0:
            nodes += [constant(f'{name}_row', np.zeros([1, *shape[1:]], dtype)),
                      helper.make_node('Gather', [f'{name}_row', 'no_index'], [name], axis=0)]
            shape = ['N', *shape[1:]]
        else:
            nodes.append(constant(name, np.zeros(shape, dtype)))
        infos.append(helper.make_tensor_value_info(name, kind, shape))
    if not outputs:
        nodes.append(helper.make_node('Relu', ['input'], ['y']))
        infos.append(helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 3, height, width]))
    graph = helper.make_graph(nodes, 'tiny', [helper.make_tensor_value_info(
        'input', TensorProto.FLOAT, [1, 3, height, width])], infos)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path
