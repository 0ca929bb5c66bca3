"""Broken data is one ``error:`` line naming the file, before any work (issue 19, "Data").

Each case copies one layout of ``data/shapes`` (the split it breaks), breaks one thing and runs
``tools/train.py`` or ``tools/test.py`` with ``--cfg-options ...data_root=<copy>``: exit 2, one
``error:`` line naming the file or folder, no traceback, no work folder.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest

from tests.helpers import REPO, SHAPES_CONFIGS, run_tool, single_error_line

TOOLS = {'train': 'tools/train.py', 'test': 'tools/test.py'}
#: The split each tool reads first: train.py checks train (then val), test.py the test split
#: (the shapes configs' val files).
SPLIT_OF_TOOL = {'train': 'train', 'test': 'val'}
ADE_SPLITS = {'train': 'training', 'val': 'validation'}

pytestmark = pytest.mark.usefixtures('one_cpu_thread')


@pytest.fixture
def in_repo(monkeypatch, shapes_data):
    monkeypatch.chdir(REPO)


# ------------------------------------------------------------------------------------------
# Defects: each breaks one thing in the copy of a split and returns what the error must name
# ------------------------------------------------------------------------------------------
def coco_json(root: Path, split: str) -> Path:
    return root / 'annotations' / f'instances_{split}.json'


def first_coco_image(root: Path, split: str) -> Path:
    images = json.loads(coco_json(root, split).read_text())['images']
    return root / split / images[0]['file_name']


def truncated_annotation_json(root: Path, split: str) -> list[str]:
    path = coco_json(root, split)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return [str(path), 'is not valid JSON: line 1 column', '(byte ']


def annotation_without_image(root: Path, split: str) -> list[str]:
    image = first_coco_image(root, split)
    image.unlink()
    return [str(image), 'does not exist', f'listed in {coco_json(root, split)}']


def zero_byte_image(root: Path, split: str) -> list[str]:
    image = first_coco_image(root, split)
    image.write_bytes(b'')
    return [str(image), 'is empty (0 bytes)']


def text_file_as_image(root: Path, split: str) -> list[str]:
    image = first_coco_image(root, split)
    image.write_text('<html>403 Forbidden</html>\n')
    return [str(image), 'is not an image']


def json_without_images(root: Path, split: str) -> list[str]:
    path = coco_json(root, split)
    coco = json.loads(path.read_text())
    path.write_text(json.dumps(dict(coco, images=[], annotations=[])))
    return [str(path), 'lists no images']


def missing_label_png(root: Path, split: str) -> list[str]:
    label = sorted((root / 'annotations' / ADE_SPLITS[split]).glob('*.png'))[0]
    label.unlink()
    image = root / 'images' / ADE_SPLITS[split] / (label.stem + '.jpg')
    return [f'label map {label} does not exist', f'the label map of {image}']


def class_folder_missing(root: Path, split: str) -> list[str]:
    shutil.rmtree(root / split / 'star')
    return [f'class folder {root / split / "star"} is missing']


def zero_byte_file_in_class(root: Path, split: str) -> list[str]:
    image = sorted((root / split / 'square').iterdir())[0]
    image.write_bytes(b'')
    return [str(image), 'is empty (0 bytes)']


def non_image_file_in_class(root: Path, split: str) -> list[str]:
    image = sorted((root / split / 'square').iterdir())[0]
    image.write_text('not a picture\n')
    return [str(image), 'is not an image']


def empty_class_folder(root: Path, split: str) -> list[str]:
    empty_folder(root / split / 'star')
    return [f'class folder {root / split / "star"} holds no image',
            "allow_empty_class_folders=['star']"]


def empty_folder(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()


Defect = Callable[[Path, str], list]
# (layout, defect, tools)
CASES: list[tuple[str, Defect, tuple[str, ...]]] = [
    ('coco', truncated_annotation_json, ('train', 'test')),
    ('coco', annotation_without_image, ('train', 'test')),
    ('coco', zero_byte_image, ('train', 'test')),
    ('coco', text_file_as_image, ('train', 'test')),
    ('coco', json_without_images, ('train', 'test')),
    ('ade', missing_label_png, ('train', 'test')),
    ('imagenet', class_folder_missing, ('train', 'test')),
    ('imagenet', zero_byte_file_in_class, ('train', 'test')),
    ('imagenet', non_image_file_in_class, ('train', 'test')),
    ('imagenet', empty_class_folder, ('train', 'test')),
]
TASK_OF_LAYOUT = {'coco': 'detector', 'ade': 'segmentor', 'imagenet': 'classifier'}


def copy_layout(shapes_data: Path, layout: str, split: str, target: Path) -> Path:
    """The layout with only ``split``'s files (a refused run reads nothing else)."""
    source = shapes_data / layout
    if layout == 'coco':
        shutil.copytree(source / split, target / split)
        (target / 'annotations').mkdir(parents=True)
        shutil.copy(coco_json(source, split), coco_json(target, split))
    elif layout == 'ade':
        for kind in ('images', 'annotations'):
            shutil.copytree(source / kind / ADE_SPLITS[split], target / kind / ADE_SPLITS[split])
    else:
        shutil.copytree(source / split, target / split)
    return target


def data_root_options(layout: str, root: Path) -> list[str]:
    options = [f'{loader}_dataloader.dataset.data_root={root}/'
               for loader in ('train', 'val', 'test')]
    if layout == 'coco':
        options += [f'{split}_evaluator.ann_file={coco_json(root, "val")}'
                    for split in ('val', 'test')]
    return options


def run_on_copy(tool: str, layout: str, root: Path, work_dir: Path, capsys, trained_checkpoints,
                *options: str) -> tuple[int, str, str]:
    config = SHAPES_CONFIGS[TASK_OF_LAYOUT[layout]]
    argv = [config]
    if tool == 'test':
        argv.append(trained_checkpoints[TASK_OF_LAYOUT[layout]])
    argv += ['--work-dir', work_dir, '--cfg-options', *data_root_options(layout, root), *options]
    return run_tool(TOOLS[tool], argv, capsys)


@pytest.mark.parametrize('tool, layout, defect', [
    pytest.param(tool, layout, defect, id=f'{layout}-{defect.__name__.replace("_", "-")}-{tool}')
    for layout, defect, tools in CASES for tool in tools])
def test_bad_data_is_one_line_before_any_work(tool, layout, defect, in_repo, shapes_data,
                                              trained_checkpoints, tmp_path, capsys):
    split = SPLIT_OF_TOOL[tool]
    root = copy_layout(shapes_data, layout, split, tmp_path / 'data')
    expected = defect(root, split)
    work_dir = tmp_path / 'work'
    status, _, err = run_on_copy(tool, layout, root, work_dir, capsys, trained_checkpoints)
    assert status == 2, err[-3000:]
    line = single_error_line(err)
    for part in expected:
        assert part in line, line
    assert not work_dir.exists(), sorted(p.name for p in work_dir.rglob('*'))


def test_a_deliberately_empty_class_folder_warns_by_name(in_repo, shapes_data,
                                                         trained_checkpoints, tmp_path, capsys):
    root = copy_layout(shapes_data, 'imagenet', 'val', tmp_path / 'data')
    empty_folder(root / 'val' / 'star')
    status, out, err = run_on_copy('test', 'imagenet', root, tmp_path / 'work', capsys,
                                   trained_checkpoints, "allow_empty_class_folders=['star']")
    assert status == 0, err[-3000:]
    assert 'error:' not in err
    warnings = [line for line in err.splitlines() if line.startswith('warning:')]
    assert len(warnings) == 1, err[-3000:]
    assert f'class folder {root / "val" / "star"}' in warnings[0]
    assert "class 'star' has no sample" in warnings[0]
    assert 'test metrics:' in out


# ------------------------------------------------------------------------------------------
# A file that passes the check (its header is fine) but does not decode: the guard at iteration N
# ------------------------------------------------------------------------------------------
TINY_TRAIN = ['train_cfg.max_epochs=1', 'train_dataloader.dataset.indices=8',
              'train_dataloader.batch_size=4', 'val_cfg=None', 'val_dataloader=None',
              'val_evaluator=None', 'randomness.seed=0']


def truncated_png(root: Path) -> Path:
    """The first training sample (class folders sorted: circle first), cut after its header."""
    image = sorted((root / 'train' / 'circle').iterdir())[0]
    image.write_bytes(image.read_bytes()[:200])
    return image


def test_a_sample_that_fails_to_decode_stops_training_with_one_line(in_repo, shapes_data,
                                                                    tmp_path, capsys):
    root = copy_layout(shapes_data, 'imagenet', 'train', tmp_path / 'data')
    image = truncated_png(root)
    status, _, err = run_tool(TOOLS['train'], [
        SHAPES_CONFIGS['classifier'], '--work-dir', tmp_path / 'work', '--cfg-options',
        f'train_dataloader.dataset.data_root={root}/', *TINY_TRAIN], capsys)
    assert status == 2, err[-3000:]
    line = single_error_line(err)
    assert str(image) in line and 'sample ' in line, line
    assert 'sample 0' in line, line  # its index in the dataset, whatever the sampler's order
    # No checkpoint before iteration 1: the line says how to start again (else: --resume).
    assert 'python tools/train.py' in line, line
    assert not list((tmp_path / 'work').glob('*.pth'))


def test_skip_unreadable_samples_skips_and_counts_each_one(in_repo, shapes_data, tmp_path,
                                                           capsys):
    root = copy_layout(shapes_data, 'imagenet', 'train', tmp_path / 'data')
    image = truncated_png(root)
    work = tmp_path / 'work'
    status, _, err = run_tool(TOOLS['train'], [
        SHAPES_CONFIGS['classifier'], '--work-dir', work, '--cfg-options',
        f'train_dataloader.dataset.data_root={root}/', *TINY_TRAIN,
        'skip_unreadable_samples=True'], capsys)
    assert status == 0, err[-3000:]
    log = ''.join(p.read_text() for p in work.glob('*/*.log'))
    skips = [line for line in log.splitlines() if 'skipped: sample' in line]
    assert len(skips) == 1, log[-3000:]  # one epoch: the sample is read once
    assert str(image) in skips[0] and '1 unreadable sample skipped so far' in skips[0]
    assert (work / 'epoch_1.pth').is_file()
