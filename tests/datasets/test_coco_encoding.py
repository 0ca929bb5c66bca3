"""COCO annotations of rendered scenes (repnext_mm/datasets/coco_encoding.py)."""
from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from repnext_mm.datasets import coco_encoding as coco
from repnext_mm.datasets.shapes import CLASSES, ShapeObject, rasterize_polygons, shape_polygon


class NoRandomRle:
    """An rng stand-in that never picks the random uncompressed RLE: deterministic encodings."""

    @staticmethod
    def random() -> float:
        return 1.0


def test_occluded_objects_get_visible_masks_holes_as_rle_and_hidden_ones_dropped():
    size = 64
    big = shape_polygon(CLASSES.index('square'), (32, 32), 26, 0.0)
    inner = shape_polygon(CLASSES.index('circle'), (32, 32), 8, 0.0)
    hidden = shape_polygon(CLASSES.index('triangle'), (32, 32), 5, 0.0)
    # Painting order: the triangle first (then fully covered), the square, a circle inside it.
    objects = [ShapeObject(CLASSES.index('triangle'), hidden),
               ShapeObject(CLASSES.index('square'), big),
               ShapeObject(CLASSES.index('circle'), inner)]
    instance_map = np.zeros((size, size), np.int32)
    for index, obj in enumerate(objects):
        instance_map[rasterize_polygons([obj.polygon], size, size).astype(bool)] = index + 1
    assert (instance_map == 1).sum() == 0

    anns = coco.coco_annotations(instance_map, objects, NoRandomRle(), image_id=0, first_ann_id=7)
    assert [a['category_id'] for a in anns] == [objects[1].label + 1, objects[2].label + 1]
    assert [a['id'] for a in anns] == [7, 8]
    square, circle = anns
    # The square's visible part has a hole where the circle is: polygons cannot say that.
    assert isinstance(square['segmentation'], dict)
    assert isinstance(square['segmentation']['counts'], str)
    square_mask = coco.decode_segmentation(square['segmentation'], size, size).astype(bool)
    assert np.array_equal(square_mask, instance_map == 2)
    assert not square_mask[32, 32]
    assert square['bbox'] == coco.mask_bbox(instance_map == 2)
    assert square['area'] == (instance_map == 2).sum()
    # The unoccluded circle keeps its drawn polygon, which decodes exactly.
    assert circle['segmentation'] == [inner.ravel().tolist()]
    assert np.array_equal(coco.decode_segmentation(circle['segmentation'], size, size),
                          instance_map == 3)


def test_partly_covered_object_without_hole_gets_a_traced_polygon():
    size = 64
    objects = [ShapeObject(CLASSES.index('square'), shape_polygon(1, (24, 32), 16, 0.0)),
               ShapeObject(CLASSES.index('circle'), shape_polygon(0, (44, 32), 12, 0.0))]
    instance_map = np.zeros((size, size), np.int32)
    for index, obj in enumerate(objects):
        instance_map[rasterize_polygons([obj.polygon], size, size).astype(bool)] = index + 1
    visible = instance_map == 1
    segmentation = coco.visible_segmentation(objects[0], visible)
    assert isinstance(segmentation, list) and segmentation != [objects[0].polygon.ravel().tolist()]
    decoded = coco.decode_segmentation(segmentation, size, size)
    assert coco.mask_iou(decoded, visible) >= coco.MIN_POLYGON_IOU


@pytest.mark.parametrize('first_pixel', [0, 1])
def test_uncompressed_rle_round_trips_through_pycocotools(first_pixel):
    rng = np.random.default_rng(first_pixel)
    mask = rng.random((13, 7)) < 0.4
    mask[0, 0] = bool(first_pixel)  # COCO RLE must start with a (possibly empty) run of zeros
    rle = coco.uncompressed_rle(mask)
    assert sum(rle['counts']) == mask.size
    decoded = mask_utils.decode(mask_utils.frPyObjects(rle, 13, 7))
    assert np.array_equal(decoded.astype(bool), mask)
    assert np.array_equal(coco.decode_segmentation(rle, 13, 7).astype(bool), mask)


def test_mask_bbox_and_iou():
    mask = np.zeros((6, 9), bool)
    mask[2:4, 3:8] = True
    assert coco.mask_bbox(mask) == [3.0, 2.0, 5.0, 2.0]
    other = np.zeros_like(mask)
    other[2:4, 3:5] = True
    assert coco.mask_iou(mask, other) == pytest.approx(4 / 10)
    assert coco.mask_iou(np.zeros_like(mask), np.zeros_like(mask)) == 1.0


def test_categories_are_the_classes_with_ids_from_1():
    categories = coco.coco_categories()
    assert [(c['id'], c['name']) for c in categories] == [
        (1, 'circle'), (2, 'square'), (3, 'star'), (4, 'triangle')]
    assert {c['supercategory'] for c in categories} == {'shape'}
