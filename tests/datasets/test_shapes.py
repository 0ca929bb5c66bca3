"""Rendering of the synthetic shapes (repnext_mm/datasets/shapes.py), and the shapes configs'
agreement with the generator's class list."""
from __future__ import annotations

import numpy as np
import pytest
from mmengine.config import Config

from repnext_mm.datasets import shapes
from repnext_mm.datasets.coco_encoding import coco_categories
from tests.helpers import REPO

# The polygon each class name is drawn as: its vertex count.
VERTICES = {'circle': shapes.CIRCLE_VERTICES, 'square': 4, 'star': 10, 'triangle': 3}


def test_each_label_is_drawn_as_the_shape_its_class_names():
    assert sorted(VERTICES) == sorted(shapes.CLASSES)
    for label, name in enumerate(shapes.CLASSES):
        polygon = shapes.shape_polygon(label, (50.0, 50.0), 20.0, angle=0.3)
        assert polygon.shape == (VERTICES[name], 2), name
        assert np.allclose(np.linalg.norm(polygon - 50.0, axis=1).max(), 20.0, atol=0.01)


def test_classes_are_in_folder_order_with_one_colour_each():
    # Folder-scanning loaders (mmpretrain's CustomDataset) number classes by sorted name.
    assert list(shapes.CLASSES) == sorted(shapes.CLASSES)
    assert len(shapes.PALETTE) == len(shapes.CLASS_HUE_BANDS) == len(shapes.CLASSES)


def test_unoccluded_polygon_rasterizes_to_the_painted_pixels():
    image, instance_map, objects = shapes.render_scene(np.random.default_rng(5), 96,
                                                       num_objects=(1, 1))
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8 and len(objects) == 1
    mask = shapes.rasterize_polygons([objects[0].polygon], 96, 96).astype(bool)
    assert np.array_equal(mask, instance_map == 1)


def test_scenes_are_a_function_of_the_generator_state():
    first = shapes.render_scene(np.random.default_rng(7), 64)
    again = shapes.render_scene(np.random.default_rng(7), 64)
    other = shapes.render_scene(np.random.default_rng(8), 64)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_semantic_map_labels_visible_objects_from_1():
    _, instance_map, objects = shapes.render_scene(np.random.default_rng(3), 64)
    labels = shapes.semantic_map(instance_map, objects)
    assert labels.dtype == np.uint8
    assert np.array_equal(labels == 0, instance_map == 0)
    for index, obj in enumerate(objects):
        assert np.all(labels[instance_map == index + 1] == obj.label + 1)


def test_render_single_paints_the_requested_class():
    label = shapes.CLASSES.index('star')
    image, mask = shapes.render_single(np.random.default_rng(0), 64, label)
    assert image.shape == (64, 64, 3) and mask.dtype == bool
    assert 0.05 < mask.mean() < 0.9  # one dominant shape, fully inside the image


# Each shapes config and where its class-count setting sits under ``model``.
SHAPES_CONFIGS = {
    'configs/mmdet/mask_rcnn_repnext_m0_fpn_shapes.py': ('roi_head', 'bbox_head'),
    'configs/mmseg/fpn_repnext_m0_shapes.py': ('decode_head', ),
    'configs/mmpretrain/repnext_m0_shapes.py': ('head', ),
}


@pytest.mark.parametrize('config', SHAPES_CONFIGS)
def test_shapes_configs_name_the_generators_categories_in_label_order(config):
    cfg = Config.fromfile(str(REPO / config))
    generated = [category['name'] for category in coco_categories()]
    for split in ('train', 'val', 'test'):
        metainfo = cfg[f'{split}_dataloader']['dataset']['metainfo']
        assert list(metainfo['classes']) == generated, (config, split)
        if 'palette' in metainfo:
            assert [tuple(colour) for colour in metainfo['palette']] == list(shapes.PALETTE)
    head = cfg.model
    for key in SHAPES_CONFIGS[config]:
        head = head[key]
    assert head['num_classes'] == len(generated)
