"""setup.py: wheels, sdists and editable installs carry configs and tools in ``repnext_mm/.mim``.

The slow test is the user's path end to end: build a wheel, install it with its ``mmdet`` and
``mim`` extras into a fresh virtual environment that sees this environment's stack (so it needs
neither pip's cache nor a compiler), then ``mim train repnext_mm <config name>`` and
``mim test`` from a folder that is not the checkout.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHAPES_CONFIG_NAME = 'mask_rcnn_repnext_m0_fpn_shapes.py'
# What the build may not copy: environments, data, outputs and the editable install's links.
TOP_LEVEL_NOT_SOURCE = {'.venv', '.git', 'data', 'work_dirs', 'build', 'dist', '.pytest_cache'}
NOT_SOURCE_ANYWHERE = shutil.ignore_patterns('*.egg-info', '.mim', '__pycache__', '*.pyc')


def not_source(folder: str, names: list[str]) -> set[str]:
    ignored = set(NOT_SOURCE_ANYWHERE(folder, names))
    if Path(folder) == REPO:
        ignored |= TOP_LEVEL_NOT_SOURCE & set(names)
    return ignored


def pip_env() -> dict:
    """pip as tools/setup_env.sh runs it: registry builds only, this machine's pip config ignored."""
    env = {k: v for k, v in os.environ.items() if k not in ('PIP_FIND_LINKS', 'PYTHONPATH')}
    env.update(PIP_CONFIG_FILE='/dev/null', PIP_DISABLE_PIP_VERSION_CHECK='1')
    return env


def run(command: list, cwd: Path, env: dict | None = None,
        timeout: float = 1200) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env or pip_env(),
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f'{" ".join(map(str, command))}: exit {result.returncode}\n'
        f'--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}')
    return result


def expected_mim_files() -> set[str]:
    """Every config and tool of the checkout, as paths inside the installed package."""
    files = {'repnext_mm/.mim/model-index.yml'}
    for folder, patterns in (('configs', ('*.py', '*.yml')), ('tools', ('*.py', '*.sh'))):
        for pattern in patterns:
            files |= {f'repnext_mm/.mim/{p.relative_to(REPO).as_posix()}'
                      for p in (REPO / folder).rglob(pattern) if '__pycache__' not in p.parts}
    return files


@pytest.fixture(scope='module')
def source_copy(tmp_path_factory) -> Path:
    # Built from a copy: an in-tree build would replace the editable install's .mim links with
    # copies in this checkout.
    src = tmp_path_factory.mktemp('src') / 'repnext_mm_src'
    shutil.copytree(REPO, src, ignore=not_source)
    return src


@pytest.fixture(scope='module')
def wheel(source_copy, tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp('wheel')
    run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
         '-w', dist, source_copy], cwd=dist)
    (built,) = dist.glob('repnext_mm-*.whl')
    return built


def test_wheel_carries_every_config_and_tool(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = expected_mim_files() - names
    assert not missing, f'not in {wheel.name}: {sorted(missing)[:10]}'
    assert 'repnext_mm/models/backbones/repnext.py' in names
    assert not [n for n in names if '__pycache__' in n or n.endswith('.pyc')]
    # The library only: tests, data and work dirs stay out.
    assert not [n for n in names if n.startswith(('tests/', 'data/', 'work_dirs/'))]


def test_sdist_carries_every_config_and_tool(source_copy, tmp_path):
    run([sys.executable, 'setup.py', '-q', 'sdist', '-d', tmp_path], cwd=source_copy)
    (sdist,) = tmp_path.glob('repnext_mm-*.tar.gz')
    with tarfile.open(sdist) as archive:
        root = archive.getnames()[0].split('/')[0]
        names = {n[len(root) + 1:] for n in archive.getnames()}
    missing = expected_mim_files() - names
    assert not missing, f'not in {sdist.name}: {sorted(missing)[:10]}'
    # A wheel built from the sdist needs the sources of .mim as well.
    assert {'setup.py', 'MANIFEST.in', 'configs/mmdet/mask_rcnn_repnext_m4_fpn_1x_coco.py',
            'tools/train.py', 'requirements/constraints.txt'} <= names


def test_editable_install_links_mim_to_the_checkout():
    # tools/setup_env.sh installed this checkout with pip install -e: .mim holds links, so an
    # edited config is what mim sees.
    import repnext_mm
    package = Path(repnext_mm.__file__).parent
    assert package == REPO / 'repnext_mm', 'the test environment should use the editable install'
    for name in ('configs', 'tools', 'model-index.yml'):
        link = package / '.mim' / name
        assert link.is_symlink(), f'{link} should be a link made by pip install -e'
        assert link.resolve() == (REPO / name).resolve()
    assert (package / '.mim' / 'configs' / 'mmdet' / 'mask_rcnn_repnext_m4_fpn_1x_coco.py').is_file()


# What the fresh environment installs itself: the package under test, and the one pure-Python
# tool whose console script the test runs. Everything else (torch, the mmcv this environment
# compiled, mmdet, ...) is seen through a folder of links to this environment's site-packages,
# so the test needs no pip cache and no compiler, and pip's resolver still checks the extras.
INSTALLED_BY_THE_TEST = ('repnext_mm', 'repnext-mm', 'openmim')


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_trains_and_tests_with_mim(wheel, tmp_path):
    venv = tmp_path / 'venv'
    try:
        _train_and_test_in_fresh_venv(wheel, venv, tmp_path)
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def distribution_name(entry: Path) -> str | None:
    """``openmim`` for ``openmim-0.3.9.dist-info``; None for anything that is not metadata."""
    if entry.suffix not in ('.dist-info', '.egg-info', '.egg-link'):
        return None
    return entry.name.split('-')[0].lower().replace('_', '-')


def link_this_stack(view: Path) -> None:
    """Links every entry of this environment's site-packages into ``view`` except the package
    under test, its editable-install hooks and the tools the fresh environment installs itself."""
    import site

    excluded = {name.replace('_', '-') for name in INSTALLED_BY_THE_TEST}
    view.mkdir()
    for site_packages in map(Path, site.getsitepackages()):
        for entry in site_packages.iterdir():
            name = distribution_name(entry)
            if (name in excluded or entry.suffix == '.pth' or entry.name.startswith('__editable__')
                    or entry.name in ('repnext_mm', 'mim', '__pycache__')
                    or (view / entry.name).exists()):
                continue
            (view / entry.name).symlink_to(entry)


def _train_and_test_in_fresh_venv(wheel: Path, venv: Path, tmp_path: Path) -> None:
    run([getattr(sys, '_base_executable', sys.executable), '-m', 'venv', venv], cwd=tmp_path)
    python, mim = venv / 'bin' / 'python', venv / 'bin' / 'mim'
    # The venv's bundled setuptools is older than torch requires (>=77): the stack's serves.
    run([python, '-m', 'pip', 'uninstall', '-q', '-y', 'setuptools'], cwd=tmp_path)
    own_site = Path(run([python, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
                        cwd=tmp_path).stdout.strip())
    link_this_stack(tmp_path / 'stack')
    # A path line in a .pth file: the stack comes after the fresh environment's own packages.
    (own_site / 'this_stack.pth').write_text(f'{tmp_path / "stack"}\n')
    constraints = tmp_path / 'constraints.txt'
    frozen = run([sys.executable, '-m', 'pip', 'freeze', '--all', '--exclude-editable'],
                 cwd=tmp_path)
    constraints.write_text('\n'.join(
        line for line in frozen.stdout.splitlines()
        if line and not line.startswith(('-e ', '#', 'pip==', *INSTALLED_BY_THE_TEST))) + '\n')
    before = {p.name for p in own_site.iterdir()}
    run([python, '-m', 'pip', 'install', '-q', '-c', constraints, f'{wheel}[mmdet,mim]'],
        cwd=tmp_path)
    added = {distribution_name(own_site / name) for name in
             {p.name for p in own_site.iterdir()} - before} - {None}
    # Nothing of the stack was downloaded or built: mmcv is the one this environment has.
    assert added == {'repnext-mm', 'openmim'}, sorted(added)
    mmcv_ops = run([python, '-c', 'import mmcv.ops, os; print(os.path.realpath(mmcv.ops.__file__))'],
                   cwd=tmp_path).stdout.strip()
    import mmcv.ops
    assert mmcv_ops == os.path.realpath(mmcv.ops.__file__)

    # A folder that is not the checkout: the config and tools must come from the installed wheel.
    workspace = tmp_path / 'workspace'
    (workspace / 'data').mkdir(parents=True)
    data = REPO / 'data' / 'shapes'
    if not (data / 'coco' / 'annotations' / 'instances_train.json').is_file():
        run([sys.executable, REPO / 'tools' / 'data' / 'make_shapes.py', '--quiet'], cwd=REPO)
    (workspace / 'data' / 'shapes').symlink_to(data)
    env = {**pip_env(), 'OMP_NUM_THREADS': '1', 'PATH': f'{venv / "bin"}:{os.environ["PATH"]}'}

    located = run([python, '-c', 'import repnext_mm; print(repnext_mm.__file__)'],
                  cwd=workspace, env=env)
    installed = Path(located.stdout.strip()).parent
    assert installed.is_relative_to(venv), located.stdout
    mim_config = installed / '.mim' / 'configs' / 'mmdet' / SHAPES_CONFIG_NAME

    # One iteration: 4 training images at batch 4, one epoch, no validation.
    work_dir = workspace / 'work_dirs' / 'one_iteration'
    trained = run([mim, 'train', 'repnext_mm', SHAPES_CONFIG_NAME, '--work-dir', work_dir,
                   '--cfg-options', 'train_cfg.max_epochs=1', 'train_dataloader.dataset.indices=4',
                   'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
                   'randomness.seed=0'], cwd=workspace, env=env)
    assert str(mim_config) in trained.stdout, trained.stdout[-2000:]
    assert (work_dir / 'epoch_1.pth').is_file(), sorted(p.name for p in work_dir.iterdir())
    (log,) = work_dir.glob('*/*.log')
    assert 'Epoch(train) [1][1/1]' in log.read_text(), log.read_text()[-2000:]

    tested = run([mim, 'test', 'repnext_mm', SHAPES_CONFIG_NAME, '--checkpoint',
                  work_dir / 'epoch_1.pth', '--work-dir', workspace / 'work_dirs' / 'test',
                  '--cfg-options', 'test_dataloader.dataset.indices=4'], cwd=workspace, env=env)
    assert 'coco/bbox_mAP' in tested.stdout + tested.stderr, tested.stdout[-2000:]
    assert 'coco/segm_mAP' in tested.stdout + tested.stderr, tested.stdout[-2000:]
