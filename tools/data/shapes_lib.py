"""Drawing and annotation helpers for the synthetic "shapes" data set (see ``make_shapes.py``).

Every shape is a polygon rasterized with pycocotools, the same rasterizer that decodes COCO
polygons at training time, so the polygon of an unoccluded shape decodes to exactly the pixels
that were painted. Objects are painted in order onto an instance map; later objects cover earlier
ones, and every mask written out is the *visible* part of its object.

All randomness comes from the ``numpy.random.Generator`` passed in: the same generator state
gives the same pixels.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

# Class names in label order (alphabetical, so that folder-scanning loaders such as mmpretrain's
# CustomDataset number them the same): COCO category id = index + 1, ADE label = index + 1 (0 =
# background), ImageNet-style label = index.
CLASSES: tuple[str, ...] = ('circle', 'square', 'star', 'triangle')
# One RGB colour per class for visualizers (mmseg/mmdet ``palette``).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 225, 25))

# Vertices used to approximate a circle: enough that it looks round at 128 px, few enough that
# the polygon stays small in the JSON.
CIRCLE_VERTICES = 40
STAR_INNER_RATIO = 0.45
# Decimals kept in polygon coordinates (JSON size vs. precision far below a pixel).
POLYGON_DECIMALS = 2
# A COCO instance whose visible part is smaller than this (pixels) is left out of the annotations:
# it is (almost) fully covered by later objects, as COCO leaves out invisible objects.
MIN_VISIBLE_AREA = 24
# Objects are re-placed (a few tries) when they would leave an earlier object less visible than
# this; occlusion stays common, but mostly partial, as in real scenes.
MIN_VISIBLE_FRACTION = 0.3
PLACEMENT_TRIES = 8
# Share of the COCO instances whose polygon-representable mask is written as uncompressed RLE
# anyway, so that loaders meet both encodings; masks with holes are always (compressed) RLE.
RANDOM_RLE_FRACTION = 0.1
# Minimum RGB distance between an object's colour and the background behind it.
MIN_CONTRAST = 80.0
# Colour is a second, weaker cue besides the silhouette: most objects of a class take their hue
# from the class's band (OpenCV hue, 0..180: red, blue, green, yellow, as PALETTE), the rest any
# hue. With random hues alone, M0 trained from scratch reached only ~40% top-1 after 300
# iterations on 800 images (measured); with the cue the CPU learning tests improve clearly within
# a few hundred iterations, while colour alone caps top-1 near 85% (80% + 20% / 4 classes).
CLASS_HUE_BANDS: tuple[tuple[float, float], ...] = ((-10, 10), (105, 125), (50, 70), (20, 35))
CLASS_HUE_PROBABILITY = 0.8
# Backgrounds are washed out (mixed this much towards grey) so that they rarely look like objects.
BACKGROUND_DESATURATION = 0.5


@dataclass(frozen=True)
class ShapeObject:
    """One painted object: its class index and the polygon that was rasterized (x, y pairs)."""

    label: int
    polygon: np.ndarray  # (N, 2) float64, image coordinates (pycocotools convention)


def shape_polygon(label: int, center: tuple[float, float], radius: float, angle: float,
                  aspect: float = 1.0) -> np.ndarray:
    """Vertices of class ``label`` (an index into :data:`CLASSES`) as an (N, 2) array.

    Args:
        label: Class index.
        center: (x, y) of the shape's centre.
        radius: Circumradius in pixels.
        angle: Rotation in radians.
        aspect: Vertical squash before rotating (1 keeps the shape regular).
    """
    name = CLASSES[label]
    if name == 'circle':
        theta = np.linspace(0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)
        radii = np.full_like(theta, radius)
    elif name == 'square':
        theta = np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full_like(theta, radius)
    elif name == 'triangle':
        theta = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        radii = np.full_like(theta, radius)
    elif name == 'star':
        theta = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * STAR_INNER_RATIO)
    else:  # pragma: no cover - CLASSES and this function change together
        raise ValueError(f'no polygon defined for class {name!r}')
    x, y = radii * np.cos(theta), radii * np.sin(theta) * aspect
    cos, sin = np.cos(angle), np.sin(angle)
    points = np.stack([center[0] + cos * x - sin * y, center[1] + sin * x + cos * y], axis=1)
    # Rounded as written to the JSON, so the painted pixels are exactly what the JSON decodes to.
    return points.round(POLYGON_DECIMALS)


def rasterize_polygons(polygons: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Binary (H, W) uint8 mask of the union of ``polygons``, as pycocotools decodes them."""
    flat = [np.asarray(p, dtype=np.float64).reshape(-1).tolist() for p in polygons]
    rles = mask_utils.frPyObjects(flat, height, width)
    return mask_utils.decode(mask_utils.merge(rles))


def random_colour(rng: np.random.Generator, label: int | None = None) -> np.ndarray:
    """A saturated-enough RGB colour (float, 0..255); its hue follows ``label``'s band mostly.

    With probability :data:`CLASS_HUE_PROBABILITY` the hue comes from the class's band in
    :data:`CLASS_HUE_BANDS`, otherwise from the whole circle (and always when ``label`` is None).
    """
    if label is not None and rng.random() < CLASS_HUE_PROBABILITY:
        low, high = CLASS_HUE_BANDS[label]
        hue = rng.uniform(low, high) % 180
    else:
        hue = rng.uniform(0, 180)
    hsv = np.array([[[hue, rng.uniform(110, 255), rng.uniform(110, 255)]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random background: a two-colour gradient at a random angle, clutter lines and noise.

    Returns:
        (H, W, 3) float64 RGB image.
    """
    grey = rng.uniform(60, 200)
    first, second = (grey + (1 - BACKGROUND_DESATURATION) * (rng.uniform(0, 255, 3) - grey)
                     for _ in range(2))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    ramp = (np.cos(angle) * xx / max(width - 1, 1) + np.sin(angle) * yy / max(height - 1, 1))
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9)
    image = first * (1 - ramp[..., None]) + second * ramp[..., None]
    # Thin straight clutter lines: edges that belong to no object, so "edge => object" fails.
    canvas = np.ascontiguousarray(image.astype(np.float32))
    for _ in range(int(rng.integers(0, 4))):
        p0 = tuple(int(v) for v in rng.integers(0, (width, height)))
        p1 = tuple(int(v) for v in rng.integers(0, (width, height)))
        cv2.line(canvas, p0, p1, tuple(float(c) for c in rng.uniform(0, 255, 3)),
                 thickness=int(rng.integers(1, 3)))
    return canvas.astype(np.float64) + rng.normal(0, 6, (height, width, 3))


def render_texture(rng: np.random.Generator, height: int, width: int,
                   base: np.ndarray) -> np.ndarray:
    """A full-frame texture around colour ``base``: flat, stripes, gradient or blotches + noise."""
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    if kind == 0:  # flat
        texture = np.broadcast_to(base, (height, width, 3)).copy()
    elif kind == 1:  # stripes of the base colour and a darker/lighter variant
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 10)
        phase = (np.cos(angle) * xx + np.sin(angle) * yy) / period
        stripe = (np.floor(phase) % 2)[..., None]
        other = np.clip(base * rng.uniform(0.55, 0.8), 0, 255)
        texture = base * (1 - stripe) + other * stripe
    elif kind == 2:  # shading gradient
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * xx + np.sin(angle) * yy) / max(height, width)
        texture = base * (0.75 + 0.5 * (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9))[..., None]
    else:  # low-frequency blotches
        coarse = rng.normal(0, 25, (max(height // 8, 2), max(width // 8, 2), 3)).astype(np.float32)
        texture = base + cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return texture + rng.normal(0, 8, (height, width, 3))


def _contrasting_colour(rng: np.random.Generator, behind: np.ndarray, label: int) -> np.ndarray:
    colour = random_colour(rng, label)
    for _ in range(16):
        if np.linalg.norm(colour - behind) >= MIN_CONTRAST:
            break
        colour = random_colour(rng, label)
    return colour


def render_scene(rng: np.random.Generator, size: int, num_objects: tuple[int, int] = (3, 5),
                 radius_range: tuple[float, float] = (0.10, 0.22)
                 ) -> tuple[np.ndarray, np.ndarray, list[ShapeObject]]:
    """Paints ``num_objects`` (inclusive range) random shapes, later ones over earlier ones.

    Args:
        rng: Source of all randomness.
        size: Image height and width.
        num_objects: Inclusive range of the number of objects.
        radius_range: Circumradius range as fractions of ``size``.

    Returns:
        ``(image, instance_map, objects)``: RGB uint8 (H, W, 3); int32 (H, W) map holding
        ``i + 1`` where object ``i`` is visible and 0 on background; the painted objects in order.
    """
    image = render_background(rng, size, size)
    instance_map = np.zeros((size, size), np.int32)
    objects: list[ShapeObject] = []
    for index in range(int(rng.integers(num_objects[0], num_objects[1] + 1))):
        label = int(rng.integers(0, len(CLASSES)))
        for _ in range(PLACEMENT_TRIES):
            radius = rng.uniform(*radius_range) * size
            # Whole shape inside the image: truncation is not what this data set tests.
            center = (rng.uniform(radius, size - radius), rng.uniform(radius, size - radius))
            polygon = shape_polygon(label, center, radius, rng.uniform(0, 2 * np.pi),
                                    aspect=rng.uniform(0.8, 1.0))
            mask = rasterize_polygons([polygon], size, size).astype(bool)
            if _keeps_earlier_visible(instance_map, mask, len(objects)):
                break
        behind = image[mask].mean(axis=0) if mask.any() else image.mean(axis=(0, 1))
        texture = render_texture(rng, size, size, _contrasting_colour(rng, behind, label))
        image[mask] = texture[mask]
        instance_map[mask] = index + 1
        objects.append(ShapeObject(label, polygon))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), instance_map, objects


def _keeps_earlier_visible(instance_map: np.ndarray, new_mask: np.ndarray, count: int) -> bool:
    """Whether painting ``new_mask`` leaves every earlier object at least partly visible."""
    if count == 0:
        return True
    visible = np.bincount(instance_map.ravel(), minlength=count + 1)[1:]
    covered = np.bincount(instance_map[new_mask], minlength=count + 1)[1:]
    remaining = visible - covered
    return bool(np.all((visible == 0) | (remaining >= MIN_VISIBLE_FRACTION * visible)))


def render_single(rng: np.random.Generator, size: int,
                  label: int) -> tuple[np.ndarray, np.ndarray]:
    """One dominant shape of class ``label`` on a random background (classification image).

    Returns:
        ``(image, mask)``: RGB uint8 (H, W, 3) and the shape's bool (H, W) mask.
    """
    image = render_background(rng, size, size)
    radius = rng.uniform(0.25, 0.42) * size
    jitter = size / 2 - radius
    center = (size / 2 + rng.uniform(-jitter, jitter), size / 2 + rng.uniform(-jitter, jitter))
    polygon = shape_polygon(label, center, radius, rng.uniform(0, 2 * np.pi),
                            aspect=rng.uniform(0.8, 1.0))
    mask = rasterize_polygons([polygon], size, size).astype(bool)
    behind = image[mask].mean(axis=0)
    texture = render_texture(rng, size, size, _contrasting_colour(rng, behind, label))
    image[mask] = texture[mask]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def semantic_map(instance_map: np.ndarray, objects: Sequence[ShapeObject]) -> np.ndarray:
    """ADE20K-style uint8 label map: 0 = background, ``label + 1`` where an object is visible."""
    lookup = np.array([0] + [obj.label + 1 for obj in objects], np.uint8)
    return lookup[instance_map]


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


# A traced polygon must decode to at least this IoU with the visible mask, else RLE is written.
MIN_POLYGON_IOU = 0.9


def coco_annotations(instance_map: np.ndarray, objects: Sequence[ShapeObject],
                     rng: np.random.Generator, image_id: int, first_ann_id: int) -> list[dict]:
    """COCO instance annotations for the visible part of every object.

    Unoccluded objects get their drawn polygon (decodes exactly); occluded ones a traced polygon
    when it is faithful (IoU >= :data:`MIN_POLYGON_IOU`) and hole-free, otherwise compressed RLE;
    a random :data:`RANDOM_RLE_FRACTION` get uncompressed RLE. ``bbox`` and ``area`` come from the
    visible mask; objects with fewer than :data:`MIN_VISIBLE_AREA` visible pixels are left out.
    """
    height, width = instance_map.shape
    annotations = []
    for index, obj in enumerate(objects):
        visible = instance_map == index + 1
        area = int(visible.sum())
        if area < MIN_VISIBLE_AREA:
            continue
        ys, xs = np.nonzero(visible)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                float(ys.max() - ys.min() + 1)]
        use_random_rle = rng.random() < RANDOM_RLE_FRACTION
        full = rasterize_polygons([obj.polygon], height, width).astype(bool)
        segmentation: Any
        if use_random_rle:
            segmentation = uncompressed_rle(visible)
        elif np.array_equal(full, visible):
            segmentation = [obj.polygon.ravel().tolist()]
        else:
            segmentation = contour_polygons(visible)
            if segmentation is None or mask_iou(
                    rasterize_polygons([np.reshape(p, (-1, 2)) for p in segmentation],
                                       height, width), visible) < MIN_POLYGON_IOU:
                segmentation = compressed_rle(visible)
        annotations.append({
            'id': first_ann_id + len(annotations),
            'image_id': image_id,
            'category_id': obj.label + 1,
            'segmentation': segmentation,
            'area': float(area),
            'bbox': bbox,
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as file:
            file.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; data files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Writes ``obj`` as JSON (sorted keys, so identical inputs give identical bytes) atomically."""
    atomic_write_bytes(path, json.dumps(obj, sort_keys=True, separators=(',', ':')).encode())


def encode_image(image_rgb: np.ndarray, suffix: str) -> bytes:
    """PNG (lossless) or JPEG (quality 95) bytes of an RGB or single-channel uint8 image."""
    array = image_rgb if image_rgb.ndim == 2 else cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    params = ([cv2.IMWRITE_JPEG_QUALITY, 95] if suffix == '.jpg'
              else [cv2.IMWRITE_PNG_COMPRESSION, 3])
    ok, buffer = cv2.imencode(suffix, array, params)
    if not ok:  # pragma: no cover - only for an unsupported suffix or a broken OpenCV build
        raise RuntimeError(f'OpenCV could not encode a {array.shape} image as {suffix}')
    return buffer.tobytes()
