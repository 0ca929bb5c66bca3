"""COCO instance annotations of rendered shapes scenes: visible masks as polygons or RLE.

COCO stores a mask as polygons (a union of outlines, no holes) or as run-length encoding,
uncompressed (``counts`` a list) or compressed (``counts`` a string). The shapes data set uses
all three, as real COCO files do, so that loaders meet every encoding: drawn polygons for
unoccluded objects, traced polygons for occluded ones when faithful, RLE otherwise.
"""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .shapes import CLASSES, POLYGON_DECIMALS, ShapeObject, rasterize_polygons

# A COCO instance whose visible part is smaller than this (pixels) is left out of the annotations:
# it is (almost) fully covered by later objects, as COCO leaves out invisible objects.
MIN_VISIBLE_AREA = 24
# Share of the COCO instances whose polygon-representable mask is written as uncompressed RLE
# anyway, so that loaders meet both encodings; masks with holes are always (compressed) RLE.
RANDOM_RLE_FRACTION = 0.1
# A traced polygon must decode to at least this IoU with the visible mask, else RLE is written.
MIN_POLYGON_IOU = 0.9


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: column-major run lengths starting with a run of zeros."""
    flat = np.asarray(mask, np.uint8).ravel(order='F')
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {'size': [int(mask.shape[0]), int(mask.shape[1])], 'counts': counts}


def compressed_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE with ``counts`` as a str (JSON-serializable)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {'size': [int(s) for s in rle['size']], 'counts': rle['counts'].decode('ascii')}


def contour_polygons(mask: np.ndarray) -> list[list[float]] | None:
    """Polygons (COCO flat lists) tracing ``mask``'s outer contours; None if it has holes.

    A COCO polygon list is a union of outlines and cannot express a hole, so a mask with one
    (an object with a smaller one painted inside it) must be written as RLE instead.
    """
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP,
                                           cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return None
    if np.any(hierarchy[0][:, 3] >= 0):  # a contour with a parent is a hole
        return None
    polygons = []
    for contour in contours:
        points = contour.reshape(-1, 2).astype(np.float64)
        if len(points) < 3:
            return None  # a 1-2 pixel wide sliver: no polygon area, keep it exact as RLE
        # cv2 traces pixel centres; pycocotools fills pixels whose centre lies inside, so push
        # each vertex half a pixel outwards along the bisector to keep the boundary pixels.
        polygons.append(_grow_polygon(points, 0.5).ravel().round(POLYGON_DECIMALS).tolist())
    return polygons


def _grow_polygon(points: np.ndarray, amount: float) -> np.ndarray:
    """Moves every vertex of a closed polygon ``amount`` outwards (miter offset, capped)."""
    nxt = np.roll(points, -1, axis=0)
    area2 = np.sum(points[:, 0] * nxt[:, 1] - nxt[:, 0] * points[:, 1])
    orientation = 1.0 if area2 > 0 else -1.0
    prev_edge = points - np.roll(points, 1, axis=0)
    next_edge = nxt - points

    def normal(edge: np.ndarray) -> np.ndarray:
        length = np.linalg.norm(edge, axis=1, keepdims=True).clip(min=1e-9)
        # Outward normal: image y points down, so the sign follows the polygon's orientation.
        return orientation * np.stack([edge[:, 1], -edge[:, 0]], axis=1) / length

    bisector = normal(prev_edge) + normal(next_edge)
    norm = np.linalg.norm(bisector, axis=1, keepdims=True)
    bisector = np.where(norm > 1e-9, bisector / norm.clip(min=1e-9), normal(next_edge))
    cos_half = np.sum(bisector * normal(next_edge), axis=1, keepdims=True).clip(min=0.5)
    return points + bisector * amount / cos_half


def mask_iou(first: np.ndarray, second: np.ndarray) -> float:
    """Intersection over union of two binary masks (1.0 when both are empty)."""
    first, second = first.astype(bool), second.astype(bool)
    union = np.logical_or(first, second).sum()
    return 1.0 if union == 0 else float(np.logical_and(first, second).sum() / union)


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO ``[x, y, width, height]`` of the pixels set in a non-empty binary mask."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1)]


def visible_segmentation(obj: ShapeObject, visible: np.ndarray) -> list[list[float]] | dict:
    """COCO ``segmentation`` of the ``visible`` part of ``obj``: polygons or compressed RLE.

    The drawn polygon when nothing covers the object (it decodes exactly); traced polygons when
    they are hole-free and faithful (IoU >= :data:`MIN_POLYGON_IOU`); compressed RLE otherwise.
    """
    height, width = visible.shape
    if np.array_equal(rasterize_polygons([obj.polygon], height, width).astype(bool), visible):
        return [obj.polygon.ravel().tolist()]
    polygons = contour_polygons(visible)
    if polygons is not None:
        traced = rasterize_polygons([np.reshape(p, (-1, 2)) for p in polygons], height, width)
        if mask_iou(traced, visible) >= MIN_POLYGON_IOU:
            return polygons
    return compressed_rle(visible)


def coco_annotations(instance_map: np.ndarray, objects: Sequence[ShapeObject],
                     rng: np.random.Generator, image_id: int, first_ann_id: int) -> list[dict]:
    """COCO instance annotations for the visible part of every object.

    Segmentations as :func:`visible_segmentation` chooses, except a random
    :data:`RANDOM_RLE_FRACTION` as uncompressed RLE. ``bbox`` and ``area`` come from the visible
    mask; objects with fewer than :data:`MIN_VISIBLE_AREA` visible pixels are left out.
    """
    annotations = []
    for index, obj in enumerate(objects):
        visible = instance_map == index + 1
        area = int(visible.sum())
        if area < MIN_VISIBLE_AREA:
            continue
        # One draw per kept object, whatever its encoding: the stream stays aligned.
        as_uncompressed_rle = rng.random() < RANDOM_RLE_FRACTION
        annotations.append({
            'id': first_ann_id + len(annotations),
            'image_id': image_id,
            'category_id': obj.label + 1,
            'segmentation': (uncompressed_rle(visible) if as_uncompressed_rle
                             else visible_segmentation(obj, visible)),
            'area': float(area),
            'bbox': mask_bbox(visible),
            'iscrowd': 0,
        })
    return annotations


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Binary (H, W) mask of a COCO ``segmentation`` (polygons, uncompressed or compressed RLE)."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get('counts'), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle)


def coco_categories() -> list[dict]:
    """The COCO ``categories`` of the shapes data set: ids 1.. in :data:`CLASSES` order."""
    return [{'id': label + 1, 'name': name, 'supercategory': 'shape'}
            for label, name in enumerate(CLASSES)]
