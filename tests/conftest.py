"""The suite's fixtures, all of them (helpers and constants that tests import are in helpers.py).

Expensive inputs are built once per session and only when a test asks for them: the shapes data
set, "trained" checkpoints of the shapes configs, files in the authors' published layouts, image
folders for int8 calibration, and a tiny fused backbone exported to ONNX (once per module).
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.helpers import (REPO, SHAPES_CONFIGS, SMALL_GEMM, TINY_ARCH, TINY_OUTPUTS,
                           describe_process, randomize_norms, run_tool_process,
                           write_shape_images)


def pytest_configure(config):
    """Under pytest-xdist (``tools/run_tests.sh`` runs one process per core) each process gets its
    share of the cores as torch threads: two processes with two OpenMP threads each on two cores
    would spin-wait for each other (see :func:`one_cpu_thread`)."""
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
        torch.set_num_threads(max(1, (cores or 1) // workers))


#: Set in the fresh pytest process that runs an ``own_process`` test.
IN_OWN_PROCESS = 'REPNEXT_MM_TEST_IN_OWN_PROCESS'


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Runs a test marked ``own_process`` in a fresh pytest process, whose result is the test's.

    For tests that fork (DataLoader workers, ``os.fork``) or signal their own process. Earlier
    tests leave native thread pools in their process (OpenVINO's, loaded by the benchmark
    tests, makes the parent of a later fork crash with SIGSEGV), and an xdist worker dies of a
    SIGINT sent to itself; either way the whole worker would go down, and the suite would hang.
    """
    if pyfuncitem.get_closest_marker('own_process') is None or os.environ.get(IN_OWN_PROCESS):
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTEST_XDIST')}
    env[IN_OWN_PROCESS] = '1'
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-p', 'no:xdist', '-p', 'no:cacheprovider', '-q', '-rs',
         pyfuncitem.nodeid], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    summary = result.stdout.strip().splitlines()[-1:] or ['(no output)']
    if result.returncode == 0 and '1 skipped' in summary[0]:
        reasons = [line for line in result.stdout.splitlines() if line.startswith('SKIPPED')]
        pytest.skip(f'in its own process: {reasons[0] if reasons else summary[0]}')
    if result.returncode != 0 or '1 passed' not in summary[0]:
        pytest.fail(f'failed in its own process (exit {result.returncode}):\n'
                    f'{result.stdout[-4000:]}{result.stderr[-2000:]}', pytrace=False)
    return True


@pytest.fixture(autouse=True)
def no_logger_writes_to_a_closed_stream():
    """Drops MMLogger handlers left bound to an earlier test's captured (now closed) stream.

    Runners built in-process keep their logger (MMLogger instances live for the process); a
    later log call on a closed stream prints "--- Logging error ---" and a traceback to stderr,
    which the tests that assert "one error line, no traceback" would then see.
    """
    from mmengine.logging import MMLogger

    for logger in list(MMLogger._instance_dict.values()):
        for handler in list(logger.handlers):
            if getattr(getattr(handler, 'stream', None), 'closed', False):
                logger.removeHandler(handler)
    yield


@pytest.fixture(autouse=True)
def no_default_scope_leaks():
    """Restores MMEngine's default registry scope after each test.

    ``init_default_scope`` (every tool, the config tests) sets it for the whole process; a later
    test that builds from a library's registry without a scope of its own would then look in the
    wrong library (``ImageClassifier is not in the mmseg::model registry``), depending on which
    test ran before it in its process, which pytest-xdist decides.
    """
    from mmengine.registry import DefaultScope

    before = set(DefaultScope._instance_dict)
    yield
    for name in [name for name in DefaultScope._instance_dict if name not in before]:
        del DefaultScope._instance_dict[name]


@pytest.fixture(autouse=True)
def no_visualizer_leaks():
    """Forgets the visualizers a test's runners made.

    A visualizer is a per-process singleton by name (the mmdet configs name theirs
    ``'visualizer'``): a later in-process runner would get the earlier one back, still writing
    into that run's log folder, which a refused run has removed (``FileNotFoundError``).
    """
    from mmengine.visualization import Visualizer

    def registries() -> list[type]:
        found, pending = [], [Visualizer]
        while pending:
            cls = pending.pop()
            found.append(cls)
            pending.extend(cls.__subclasses__())
        return found

    before = {cls: set(cls._instance_dict) for cls in registries()}
    yield
    for cls in registries():
        for name in set(cls._instance_dict) - before.get(cls, set()):
            del cls._instance_dict[name]


@pytest.fixture
def one_cpu_thread():
    """One torch thread: on 2 shared cores a second OpenMP thread spin-waits whenever another
    process wants the core, which made training and forward/backward passes 10-100x slower (and
    their run time erratic). A module that needs it for every test says so once:
    ``pytestmark = pytest.mark.usefixtures('one_cpu_thread')``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope='session')
def shapes_data() -> Path:
    """The shapes data set in ``data/shapes`` (what the shapes configs read), as a user makes it:
    ``tools/data/make_shapes.py`` in a fresh process (a no-op when it is up to date)."""
    result = run_tool_process('tools/data/make_shapes.py', '--quiet', timeout=600)
    assert result.returncode == 0, describe_process(result)
    root = REPO / 'data' / 'shapes'
    assert (root / 'coco' / 'annotations' / 'instances_val.json').is_file()
    return root


@pytest.fixture(scope='session')
def shape_images(tmp_path_factory) -> dict[str, Path]:
    """``{'calib': 8 images, 'heldout': 8 other images}`` (64x64 shapes, class folders) for the
    int8 calibration and report tests."""
    root = tmp_path_factory.mktemp('shape_images')
    write_shape_images(root / 'calib', 8, seed=0)
    write_shape_images(root / 'heldout', 8, seed=1)
    return dict(calib=root / 'calib', heldout=root / 'heldout')


@pytest.fixture
def tmpfs(tmp_path):
    """``mount(name, size='1m', read_only=False)``: a small tmpfs at ``tmp_path / name``.

    For a full disk or a read-only file system that are real, not simulated. Returns the mount
    point, or ``None`` where mounting is not permitted (an unprivileged CI runner): the test then
    simulates the error instead. Every mount is unmounted after the test.
    """
    import subprocess

    mounted = []

    def mount(name: str, size: str = '1m', read_only: bool = False) -> Path | None:
        point = tmp_path / name
        point.mkdir()
        options = f'size={size}' + (',ro' if read_only else '')
        result = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(point)],
                                capture_output=True)
        if result.returncode != 0:
            return None
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(['umount', '-l', str(point)], check=False)


# ---------------------------------------------------------------------------------------------
# "Trained" checkpoints of the shapes configs
# ---------------------------------------------------------------------------------------------
def save_trained_checkpoint(config: Path, path: Path, seed: int = 0) -> Path:
    """Saves a freshly built model as if trained: random BN statistics, a runner-like layout."""
    from repnext_mm.apis.model import build_model, load_model_config

    torch.manual_seed(seed)
    model = randomize_norms(build_model(load_model_config(config)), seed=seed)
    torch.save(dict(
        meta=dict(epoch=1, iter=10,
                  dataset_meta=dict(classes=('circle', 'square', 'star', 'triangle'))),
        state_dict=model.state_dict(),
        optimizer=dict(state={}, param_groups=[dict(lr=1e-3)]),
    ), path)
    return path


@pytest.fixture(scope='session')
def trained_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A "trained" checkpoint per task of :data:`~tests.helpers.SHAPES_CONFIGS`, built lazily
    (each only when a test asks for it)."""
    root = tmp_path_factory.mktemp('trained')

    class Lazy(dict):
        def __missing__(self, task: str) -> Path:
            self[task] = save_trained_checkpoint(SHAPES_CONFIGS[task], root / f'{task}.pth')
            return self[task]

    return Lazy()


# ---------------------------------------------------------------------------------------------
# The authors' releases, RepNeXt-M0 in each published layout (tests/deploy/release_layout.py).
# ---------------------------------------------------------------------------------------------
@dataclass
class Release:
    """A file in one of the authors' published layouts.

    Attributes:
        path: The file; named ``checkpoint.pth`` whatever its kind (recognized by content).
        weights: The weights it was made from, in the authors' training-form names (for the
            detector and segmentor: the whole ``state_dict``).
    """
    path: Path
    weights: dict


def _release(kind: str, path: Path) -> Release:
    from tests.deploy.author_layout import author_checkpoint, author_state_dict
    from tests.deploy.release_layout import (AuthorFusedRepNext, detector_checkpoint,
                                             segmentor_checkpoint, timm_checkpoint)

    if kind == 'fused':
        weights = author_state_dict('m0', num_classes=10, seed=4)
        torch.jit.save(torch.jit.script(AuthorFusedRepNext.from_training(weights, 'm0')), path)
        return Release(path, weights)
    checkpoint = dict(imagenet=lambda: author_checkpoint('m0', num_classes=10, seed=1),
                      timm=lambda: timm_checkpoint('m0', num_classes=10, seed=2, ema=True),
                      detector=lambda: detector_checkpoint('m0', seed=3),
                      segmentor=lambda: segmentor_checkpoint('m0', seed=5))[kind]()
    torch.save(checkpoint, path)
    weights = checkpoint['model' if kind == 'imagenet' else 'state_dict']
    return Release(path, weights)


@pytest.fixture(scope='session')
def releases(tmp_path_factory) -> dict[str, Release]:
    """One file per released kind (imagenet, timm, detector, segmentor, fused), built lazily."""
    root = tmp_path_factory.mktemp('releases')

    class Lazy(dict):
        def __missing__(self, kind: str) -> Release:
            folder = root / kind
            folder.mkdir()
            self[kind] = _release(kind, folder / 'checkpoint.pth')
            return self[kind]

    return Lazy()


# ---------------------------------------------------------------------------------------------
# Benchmarks: a tiny fused backbone in ONNX, a small GEMM
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def small_gemm(monkeypatch) -> int:
    """The floor's GEMM at :data:`~tests.helpers.SMALL_GEMM` squared; returns its FLOP count."""
    from repnext_mm.benchmark import fused

    monkeypatch.setitem(fused.GEMM_SIZE, 'cpu', SMALL_GEMM)
    return 2 * SMALL_GEMM ** 3


@pytest.fixture(scope='module')
def tiny_onnx(tmp_path_factory):
    """A fused tiny RepNeXt (non-trivial BNs folded), a batch of 2 at 32x32 and its ONNX file.

    Exported once per module with the benchmarks' own export, so every runtime test runs the
    file the benchmarks run. The export needs onnxruntime: a test that asks for this fixture
    carries ``@requires_onnxruntime``.
    """
    from repnext_mm.benchmark.runtimes import export_for_timing
    from repnext_mm.models.backbones.repnext import RepNeXt

    model = randomize_norms(RepNeXt(TINY_ARCH)).eval()
    model.switch_to_deploy()
    inputs = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    path = export_for_timing(model, inputs, tmp_path_factory.mktemp('onnx') / 'tiny.onnx',
                             TINY_OUTPUTS)
    return model, inputs, path
