"""Drawing the synthetic "shapes" data set: class list, shape polygons, backgrounds, scenes.

Every shape is a polygon rasterized with pycocotools, the same rasterizer that decodes COCO
polygons at training time, so the polygon of an unoccluded shape decodes to exactly the pixels
that were painted. Objects are painted in order onto an instance map; later objects cover earlier
ones, and every mask written out is the *visible* part of its object
(:mod:`repnext_mm.datasets.coco_encoding` encodes them, :mod:`repnext_mm.datasets.make_shapes`
writes the data set).

All randomness comes from the ``numpy.random.Generator`` passed in: the same generator state
gives the same pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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
# Objects are re-placed (a few tries) when they would leave an earlier object less visible than
# this; occlusion stays common, but mostly partial, as in real scenes.
MIN_VISIBLE_FRACTION = 0.3
PLACEMENT_TRIES = 8
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
    """A :func:`random_colour` of ``label`` at least :data:`MIN_CONTRAST` from ``behind``
    (after 16 tries, the last one drawn)."""
    colour = random_colour(rng, label)
    for _ in range(16):
        if np.linalg.norm(colour - behind) >= MIN_CONTRAST:
            break
        colour = random_colour(rng, label)
    return colour


def _posed_shape(rng: np.random.Generator, label: int, center: tuple[float, float],
                 radius: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A shape at a random rotation and squash: its polygon and bool (size, size) mask."""
    polygon = shape_polygon(label, center, radius, rng.uniform(0, 2 * np.pi),
                            aspect=rng.uniform(0.8, 1.0))
    return polygon, rasterize_polygons([polygon], size, size).astype(bool)


def _paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, label: int) -> None:
    """Paints ``mask`` of ``image`` in place with a texture contrasting with what it covers."""
    behind = image[mask].mean(axis=0) if mask.any() else image.mean(axis=(0, 1))
    height, width = mask.shape
    texture = render_texture(rng, height, width, _contrasting_colour(rng, behind, label))
    image[mask] = texture[mask]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


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
            polygon, mask = _posed_shape(rng, label, center, radius, size)
            if _keeps_earlier_visible(instance_map, mask, len(objects)):
                break
        _paint(rng, image, mask, label)
        instance_map[mask] = index + 1
        objects.append(ShapeObject(label, polygon))
    return _to_uint8(image), instance_map, objects


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
    _, mask = _posed_shape(rng, label, center, radius, size)
    _paint(rng, image, mask, label)
    return _to_uint8(image), mask


def semantic_map(instance_map: np.ndarray, objects: Sequence[ShapeObject]) -> np.ndarray:
    """ADE20K-style uint8 label map: 0 = background, ``label + 1`` where an object is visible."""
    lookup = np.array([0] + [obj.label + 1 for obj in objects], np.uint8)
    return lookup[instance_map]
