"""Tests of the synthetic shapes generator (tools/data/make_shapes.py, tools/data/shapes_lib.py)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from tests.helpers import load_tool

REPO = Path(__file__).resolve().parents[3]


make_shapes = load_tool('tools/data/make_shapes.py')
lib = make_shapes.lib
# Small but with enough COCO instances (~4 per image) that every encoding path occurs.
SMALL = make_shapes.ShapesSpec(seed=3, num_train=24, num_val=4, img_size=96, cls_img_size=32)


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file() and p.name != make_shapes.LOCK_NAME}


@pytest.fixture(scope='module')
def small_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('shapes')
    assert make_shapes.make_shapes(root, SMALL, progress=False) is True
    return root


def test_layout_is_complete_and_manifest_describes_it(small_root):
    expected = set(make_shapes.expected_files(SMALL))
    written = set(file_bytes(small_root)) - {make_shapes.MANIFEST_NAME}
    assert written == expected
    manifest = json.loads((small_root / make_shapes.MANIFEST_NAME).read_text())
    assert manifest['spec'] == {'seed': 3, 'num_train': 24, 'num_val': 4, 'img_size': 96,
                                'cls_img_size': 32}
    assert manifest['classes'] == list(lib.CLASSES)
    assert manifest['num_files'] == len(expected)


def test_same_seed_gives_identical_files_and_other_seed_differs(small_root, tmp_path):
    again = tmp_path / 'again'
    make_shapes.make_shapes(again, SMALL, progress=False)
    assert file_bytes(again) == file_bytes(small_root)

    other = tmp_path / 'other'
    make_shapes.make_shapes(other, make_shapes.ShapesSpec(**{**vars(SMALL), 'seed': 4}),
                            progress=False)
    first, second = file_bytes(small_root), file_bytes(other)
    assert first.keys() == second.keys()
    assert first['coco/train/000000.png'] != second['coco/train/000000.png']
    assert first['coco/annotations/instances_train.json'] != \
        second['coco/annotations/instances_train.json']


def test_coco_json_loads_in_pycocotools_and_masks_are_the_visible_parts(small_root):
    coco = COCO(str(small_root / 'coco/annotations/instances_train.json'))
    assert [c['id'] for c in coco.loadCats(coco.getCatIds())] == [1, 2, 3, 4]
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(lib.CLASSES)
    assert len(coco.getImgIds()) == SMALL.num_train
    encodings = {'polygon': 0, 'uncompressed': 0, 'compressed': 0}
    ann_ids = set()
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        image = cv2.imread(str(small_root / 'coco/train' / info['file_name']))
        assert image.shape == (SMALL.img_size, SMALL.img_size, 3)
        # Re-render the scene from its seed: the instance map says which pixels are visible.
        rng = make_shapes.image_rng(SMALL, 'coco', 'train', image_id)
        rendered, instance_map, objects = lib.render_scene(rng, SMALL.img_size)
        assert np.array_equal(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), rendered)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        kept = [i for i in range(len(objects))
                if (instance_map == i + 1).sum() >= lib.MIN_VISIBLE_AREA]
        assert len(anns) == len(kept)
        for ann, index in zip(anns, kept):
            ann_ids.add(ann['id'])
            visible = instance_map == index + 1
            assert ann['category_id'] == objects[index].label + 1
            assert ann['iscrowd'] == 0
            assert ann['area'] == visible.sum()
            ys, xs = np.nonzero(visible)
            assert ann['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                   ys.max() - ys.min() + 1]
            decoded = coco.annToMask(ann).astype(bool)
            segmentation = ann['segmentation']
            if isinstance(segmentation, list):
                encodings['polygon'] += 1
                # Drawn polygons decode exactly; traced ones of occluded objects nearly.
                assert lib.mask_iou(decoded, visible) >= lib.MIN_POLYGON_IOU
            else:
                encodings['uncompressed' if isinstance(segmentation['counts'], list)
                          else 'compressed'] += 1
                assert np.array_equal(decoded, visible)
    assert len(ann_ids) == len(coco.getAnnIds())  # ids unique
    assert all(count > 0 for count in encodings.values()), encodings


def test_occluded_objects_get_visible_masks_holes_as_rle_and_hidden_ones_dropped():
    size = 64
    big = lib.shape_polygon(lib.CLASSES.index('square'), (32, 32), 26, 0.0)
    inner = lib.shape_polygon(lib.CLASSES.index('circle'), (32, 32), 8, 0.0)
    hidden = lib.shape_polygon(lib.CLASSES.index('triangle'), (32, 32), 5, 0.0)
    # Painting order: the triangle first (then fully covered), the square, a circle inside it.
    objects = [lib.ShapeObject(lib.CLASSES.index('triangle'), hidden),
               lib.ShapeObject(lib.CLASSES.index('square'), big),
               lib.ShapeObject(lib.CLASSES.index('circle'), inner)]
    instance_map = np.zeros((size, size), np.int32)
    for index, obj in enumerate(objects):
        instance_map[lib.rasterize_polygons([obj.polygon], size, size).astype(bool)] = index + 1
    assert (instance_map == 1).sum() == 0

    class NoRandomRle:  # keep the encodings deterministic: never pick RLE at random
        @staticmethod
        def random() -> float:
            return 1.0

    anns = lib.coco_annotations(instance_map, objects, NoRandomRle(), image_id=0, first_ann_id=7)
    assert [a['category_id'] for a in anns] == [objects[1].label + 1, objects[2].label + 1]
    assert [a['id'] for a in anns] == [7, 8]
    square, circle = anns
    # The square's visible part has a hole where the circle is: polygons cannot say that.
    assert isinstance(square['segmentation'], dict)
    assert isinstance(square['segmentation']['counts'], str)
    square_mask = lib.decode_segmentation(square['segmentation'], size, size).astype(bool)
    assert np.array_equal(square_mask, instance_map == 2)
    assert not square_mask[32, 32]
    # The unoccluded circle keeps its drawn polygon, which decodes exactly.
    assert circle['segmentation'] == [inner.ravel().tolist()]
    assert np.array_equal(lib.decode_segmentation(circle['segmentation'], size, size),
                          instance_map == 3)


@pytest.mark.parametrize('first_pixel', [0, 1])
def test_uncompressed_rle_round_trips_through_pycocotools(first_pixel):
    rng = np.random.default_rng(first_pixel)
    mask = rng.random((13, 7)) < 0.4
    mask[0, 0] = bool(first_pixel)  # COCO RLE must start with a (possibly empty) run of zeros
    rle = lib.uncompressed_rle(mask)
    assert sum(rle['counts']) == mask.size
    decoded = mask_utils.decode(mask_utils.frPyObjects(rle, 13, 7))
    assert np.array_equal(decoded.astype(bool), mask)


def test_ade_labels_are_uint8_in_range_and_match_the_images(small_root):
    for split, count in (('training', SMALL.num_train), ('validation', SMALL.num_val)):
        images = sorted((small_root / 'ade/images' / split).glob('*.jpg'))
        labels = sorted((small_root / 'ade/annotations' / split).glob('*.png'))
        assert [p.stem for p in images] == [p.stem for p in labels] == \
            [f'{i:06d}' for i in range(count)]
        seen = set()
        for image_path, label_path in zip(images, labels):
            label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
            assert label.dtype == np.uint8 and label.shape == (SMALL.img_size, SMALL.img_size)
            assert cv2.imread(str(image_path)).shape == (SMALL.img_size, SMALL.img_size, 3)
            seen |= set(np.unique(label).tolist())
        assert seen <= set(range(len(lib.CLASSES) + 1))
        assert 0 in seen and len(seen) > 2  # background and several classes occur
    # Labels are the visible objects' classes, exactly (re-rendered from the seed).
    rng = make_shapes.image_rng(SMALL, 'ade', 'train', 5)
    _, instance_map, objects = lib.render_scene(rng, SMALL.img_size)
    label = cv2.imread(str(small_root / 'ade/annotations/training/000005.png'),
                       cv2.IMREAD_UNCHANGED)
    assert np.array_equal(label, lib.semantic_map(instance_map, objects))


def test_imagenet_folders_are_balanced_and_read_by_mmpretrain(small_root):
    from mmpretrain.datasets import CustomDataset

    for split, count in (('train', SMALL.num_train), ('val', SMALL.num_val)):
        folders = sorted(p.name for p in (small_root / 'imagenet' / split).iterdir())
        assert folders == sorted(lib.CLASSES) == list(lib.CLASSES)  # label order = folder order
        dataset = CustomDataset(data_root=str(small_root / 'imagenet'), data_prefix=split,
                                pipeline=[])
        assert len(dataset) == count
        assert dataset.metainfo['classes'] == lib.CLASSES
        labels = [dataset.get_data_info(i)['gt_label'] for i in range(len(dataset))]
        assert np.bincount(labels).tolist() == [count // 4 + (i < count % 4) for i in range(4)]
        image = cv2.imread(dataset.get_data_info(0)['img_path'])
        assert image.shape == (SMALL.cls_img_size, SMALL.cls_img_size, 3)


def test_second_run_is_a_fast_no_op_that_rewrites_nothing(tmp_path):
    root = tmp_path / 'shapes'
    make_shapes.make_shapes(root, SMALL, progress=False)
    before = {p: p.stat().st_mtime_ns for p in root.rglob('*') if p.is_file()}
    started = time.perf_counter()
    assert make_shapes.make_shapes(root, SMALL, progress=False) is False
    assert time.perf_counter() - started < 1.0  # only stats the files (first run: seconds)
    assert {p: p.stat().st_mtime_ns for p in root.rglob('*') if p.is_file()} == before


def test_changed_spec_or_missing_file_regenerates_without_stale_files(tmp_path):
    root = tmp_path / 'shapes'
    make_shapes.make_shapes(root, SMALL, progress=False)
    reference = file_bytes(root)

    (root / 'ade/images/training/000003.jpg').unlink()
    assert make_shapes.make_shapes(root, SMALL, progress=False) is True
    assert file_bytes(root) == reference

    smaller = make_shapes.ShapesSpec(**{**vars(SMALL), 'num_train': 5})
    assert make_shapes.make_shapes(root, smaller, progress=False) is True
    assert set(file_bytes(root)) == set(make_shapes.expected_files(smaller)) | {
        make_shapes.MANIFEST_NAME}
    assert not (root / 'imagenet/train/star/000006.png').exists()


def test_interrupted_run_is_redone(tmp_path):
    root = tmp_path / 'shapes'
    make_shapes.make_shapes(root, SMALL, progress=False)
    (root / make_shapes.MANIFEST_NAME).unlink()  # as if killed before the manifest was written
    assert make_shapes.make_shapes(root, SMALL, progress=False) is True
    assert make_shapes.is_up_to_date(root, SMALL)


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    root = tmp_path / 'precious'
    (root / 'coco').mkdir(parents=True)
    (root / 'coco' / 'mine.txt').write_text('not generated')
    with pytest.raises(FileExistsError, match='--force'):
        make_shapes.make_shapes(root, SMALL, progress=False)
    assert (root / 'coco' / 'mine.txt').exists()
    assert make_shapes.make_shapes(root, SMALL, force=True, progress=False) is True
    assert make_shapes.is_up_to_date(root, SMALL)


@pytest.mark.parametrize('args, message', [
    (['--num-train', '0'], '--num-train'),
    (['--img-size', '16'], '--img-size'),
    (['--seed', '-1'], '--seed'),
])
def test_cli_rejects_bad_arguments_with_a_message(args, message, tmp_path, capsys):
    assert make_shapes.main(['--root', str(tmp_path / 'x'), '--quiet', *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'x').exists()


def test_cli_generates_then_reports_up_to_date(tmp_path, capsys):
    args = ['--root', str(tmp_path / 'cli'), '--quiet', '--num-train', '2', '--num-val', '1',
            '--img-size', '64', '--cls-img-size', '32']
    assert make_shapes.main(args) == 0
    assert (tmp_path / 'cli' / make_shapes.MANIFEST_NAME).exists()
    capsys.readouterr()
    assert make_shapes.main(args) == 0
    assert 'up to date' in capsys.readouterr().out
