"""The shapes data set on disk (repnext_mm/datasets/make_shapes.py): layout, determinism, the
real loaders, regeneration. The command line is tested in tests/tools/data/."""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from repnext_mm.datasets import make_shapes as ms
from repnext_mm.datasets.coco_encoding import MIN_POLYGON_IOU, MIN_VISIBLE_AREA, mask_iou
from repnext_mm.datasets.shapes import CLASSES, render_scene, semantic_map
from repnext_mm.utils.errors import InputError

# Small but with enough COCO instances (~4 per image) that every encoding path occurs.
SMALL = ms.ShapesSpec(seed=3, num_train=24, num_val=4, img_size=96, cls_img_size=32)


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file() and p.name != ms.LOCK_NAME}


@pytest.fixture(scope='module')
def small_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('shapes')
    assert ms.make_shapes(root, SMALL, progress=False) is True
    return root


def test_layout_is_complete_and_manifest_describes_it(small_root):
    expected = set(ms.expected_files(SMALL))
    written = set(file_bytes(small_root)) - {ms.MANIFEST_NAME}
    assert written == expected
    manifest = json.loads((small_root / ms.MANIFEST_NAME).read_text())
    assert manifest['spec'] == {'seed': 3, 'num_train': 24, 'num_val': 4, 'img_size': 96,
                                'cls_img_size': 32}
    assert manifest['classes'] == list(CLASSES)
    assert manifest['num_files'] == len(expected)


def test_same_seed_gives_identical_files_and_other_seed_differs(small_root, tmp_path):
    again = tmp_path / 'again'
    ms.make_shapes(again, SMALL, progress=False)
    assert file_bytes(again) == file_bytes(small_root)

    other = tmp_path / 'other'
    ms.make_shapes(other, ms.ShapesSpec(**{**vars(SMALL), 'seed': 4}), progress=False)
    first, second = file_bytes(small_root), file_bytes(other)
    assert first.keys() == second.keys()
    assert first['coco/train/000000.png'] != second['coco/train/000000.png']
    assert first['coco/annotations/instances_train.json'] != \
        second['coco/annotations/instances_train.json']


def test_coco_json_loads_in_pycocotools_and_masks_are_the_visible_parts(small_root):
    coco = COCO(str(small_root / 'coco/annotations/instances_train.json'))
    assert [c['id'] for c in coco.loadCats(coco.getCatIds())] == [1, 2, 3, 4]
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    assert len(coco.getImgIds()) == SMALL.num_train
    encodings = {'polygon': 0, 'uncompressed': 0, 'compressed': 0}
    ann_ids = set()
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        image = cv2.imread(str(small_root / 'coco/train' / info['file_name']))
        assert image.shape == (SMALL.img_size, SMALL.img_size, 3)
        # Re-render the scene from its seed: the instance map says which pixels are visible.
        rng = ms.image_rng(SMALL, 'coco', 'train', image_id)
        rendered, instance_map, objects = render_scene(rng, SMALL.img_size)
        assert np.array_equal(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), rendered)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        kept = [i for i in range(len(objects)) if (instance_map == i + 1).sum() >= MIN_VISIBLE_AREA]
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
                assert mask_iou(decoded, visible) >= MIN_POLYGON_IOU
            else:
                encodings['uncompressed' if isinstance(segmentation['counts'], list)
                          else 'compressed'] += 1
                assert np.array_equal(decoded, visible)
    assert len(ann_ids) == len(coco.getAnnIds())  # ids unique
    assert all(count > 0 for count in encodings.values()), encodings


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
        assert seen <= set(range(len(CLASSES) + 1))
        assert 0 in seen and len(seen) > 2  # background and several classes occur
    # Labels are the visible objects' classes, exactly (re-rendered from the seed).
    rng = ms.image_rng(SMALL, 'ade', 'train', 5)
    _, instance_map, objects = render_scene(rng, SMALL.img_size)
    label = cv2.imread(str(small_root / 'ade/annotations/training/000005.png'),
                       cv2.IMREAD_UNCHANGED)
    assert np.array_equal(label, semantic_map(instance_map, objects))


def test_imagenet_folders_are_balanced_and_read_by_mmpretrain(small_root):
    from mmpretrain.datasets import CustomDataset

    for split, count in (('train', SMALL.num_train), ('val', SMALL.num_val)):
        folders = sorted(p.name for p in (small_root / 'imagenet' / split).iterdir())
        assert folders == sorted(CLASSES) == list(CLASSES)  # label order = folder order
        dataset = CustomDataset(data_root=str(small_root / 'imagenet'), data_prefix=split,
                                pipeline=[])
        assert len(dataset) == count
        assert dataset.metainfo['classes'] == CLASSES
        labels = [dataset.get_data_info(i)['gt_label'] for i in range(len(dataset))]
        assert np.bincount(labels).tolist() == [count // 4 + (i < count % 4) for i in range(4)]
        image = cv2.imread(dataset.get_data_info(0)['img_path'])
        assert image.shape == (SMALL.cls_img_size, SMALL.cls_img_size, 3)


def test_second_run_is_a_fast_no_op_that_rewrites_nothing(tmp_path):
    root = tmp_path / 'shapes'
    ms.make_shapes(root, SMALL, progress=False)
    before = {p: p.stat().st_mtime_ns for p in root.rglob('*') if p.is_file()}
    started = time.perf_counter()
    assert ms.make_shapes(root, SMALL, progress=False) is False
    assert time.perf_counter() - started < 1.0  # only stats the files (first run: seconds)
    assert {p: p.stat().st_mtime_ns for p in root.rglob('*') if p.is_file()} == before


def test_changed_spec_or_missing_file_regenerates_without_stale_files(tmp_path):
    root = tmp_path / 'shapes'
    ms.make_shapes(root, SMALL, progress=False)
    reference = file_bytes(root)

    (root / 'ade/images/training/000003.jpg').unlink()
    assert ms.make_shapes(root, SMALL, progress=False) is True
    assert file_bytes(root) == reference

    smaller = ms.ShapesSpec(**{**vars(SMALL), 'num_train': 5})
    assert ms.make_shapes(root, smaller, progress=False) is True
    assert set(file_bytes(root)) == set(ms.expected_files(smaller)) | {ms.MANIFEST_NAME}
    assert not (root / 'imagenet/train/star/000006.png').exists()


def test_interrupted_run_is_redone(tmp_path):
    root = tmp_path / 'shapes'
    ms.make_shapes(root, SMALL, progress=False)
    (root / ms.MANIFEST_NAME).unlink()  # as if killed before the manifest was written
    assert ms.make_shapes(root, SMALL, progress=False) is True
    assert ms.is_up_to_date(root, SMALL)


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    root = tmp_path / 'precious'
    (root / 'coco').mkdir(parents=True)
    (root / 'coco' / 'mine.txt').write_text('not generated')
    with pytest.raises(InputError, match='--force'):
        ms.make_shapes(root, SMALL, progress=False)
    assert (root / 'coco' / 'mine.txt').exists()
    assert ms.make_shapes(root, SMALL, force=True, progress=False) is True
    assert ms.is_up_to_date(root, SMALL)


@pytest.mark.parametrize('changes, message', [
    (dict(num_train=0), '--num-train'),
    (dict(num_val=0), '--num-val'),
    (dict(img_size=16), '--img-size'),
    (dict(cls_img_size=31), '--cls-img-size'),
    (dict(seed=-1), '--seed'),
])
def test_spec_rejects_values_out_of_range(changes, message):
    with pytest.raises(InputError, match=message):
        ms.ShapesSpec(**changes)
