"""Data and annotation paths are checked before a run starts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from mmengine.config import Config

from repnext_mm.apis.inputs import check_data
from repnext_mm.utils.errors import InputError
from tests.helpers import write_shape_images


def coco_like_config(data_root: str) -> Config:
    return Config(dict(
        default_scope='mmdet',
        train_dataloader=dict(dataset=dict(
            type='RepeatDataset', times=2,
            dataset=dict(type='CocoDataset', data_root=data_root, ann_file='ann/train.json',
                         data_prefix=dict(img='train/')))),
        val_evaluator=dict(type='CocoMetric', ann_file=f'{data_root}ann/val.json')))


def write_coco_layout(root: Path) -> None:
    """ann/{train,val}.json naming two PNGs each, the train images in train/."""
    import cv2
    import numpy as np

    (root / 'ann').mkdir()
    (root / 'train').mkdir()
    images = [dict(id=i, file_name=f'{i}.png', height=4, width=4) for i in range(2)]
    for split in ('train', 'val'):
        (root / 'ann' / f'{split}.json').write_text(json.dumps(dict(
            images=images, annotations=[], categories=[dict(id=1, name='a')])))
    for image in images:
        cv2.imwrite(str(root / 'train' / image['file_name']), np.zeros((4, 4), np.uint8))


class TestCheckData:

    def test_complete_layout_passes(self, tmp_path):
        write_coco_layout(tmp_path)
        check_data(coco_like_config(f'{tmp_path}/'), ['train', 'val'])

    def test_a_bad_image_behind_a_dataset_wrapper(self, tmp_path):
        write_coco_layout(tmp_path)
        (tmp_path / 'train' / '0.png').write_bytes(b'')
        with pytest.raises(InputError) as error:
            check_data(coco_like_config(f'{tmp_path}/'), ['train'])
        assert str(error.value).startswith(
            f'train_dataloader.dataset.dataset: image {tmp_path}/train/0.png is empty (0 bytes) '
            f'(listed in {tmp_path}/ann/train.json)')

    def test_the_evaluator_annotation_file_must_parse(self, tmp_path):
        write_coco_layout(tmp_path)
        (tmp_path / 'ann' / 'val.json').write_text('{"images": [')
        cfg = coco_like_config(f'{tmp_path}/')
        cfg.val_dataloader = cfg.train_dataloader  # its annotations are train.json
        check_data(cfg, ['train'])  # not the evaluator's split
        with pytest.raises(InputError, match=f'annotation file {tmp_path}/ann/val.json is not '
                                             'valid JSON: line 1 column 13'):
            check_data(cfg, ['train', 'val'])

    def test_an_allowed_empty_class_folder_is_a_warning(self, tmp_path, capsys):
        write_shape_images(tmp_path / 'train', 4)  # one image per class
        for path in (tmp_path / 'train' / 'star').iterdir():
            path.unlink()
        cfg = Config(dict(default_scope='mmpretrain', allow_empty_class_folders=['star'],
                          train_dataloader=dict(dataset=dict(
                              type='CustomDataset', data_root=str(tmp_path), data_prefix='train'))))
        check_data(cfg, ['train'])
        assert capsys.readouterr().err == (
            f'warning: class folder {tmp_path}/train/star of train_dataloader.dataset is empty: '
            "class 'star' has no sample (allowed by allow_empty_class_folders)\n")
        cfg.allow_empty_class_folders = False
        with pytest.raises(InputError, match='star holds no image'):
            check_data(cfg, ['train'])

    def test_names_the_wrapped_dataset_and_the_override(self, tmp_path):
        with pytest.raises(InputError) as error:
            check_data(coco_like_config(f'{tmp_path}/missing/'), ['train'])
        message = str(error.value)
        assert 'data root of train_dataloader.dataset.dataset' in message
        assert '--cfg-options train_dataloader.dataset.dataset.data_root=DIR' in message
        assert 'COCO 2017' in message

    def test_missing_image_folder(self, tmp_path):
        (tmp_path / 'ann').mkdir()
        (tmp_path / 'ann' / 'train.json').write_text('{}')
        with pytest.raises(InputError, match=r"img folder of .* '.*/train/' does not exist"):
            check_data(coco_like_config(f'{tmp_path}/'), ['train'])

    def test_only_requested_splits_are_checked(self, tmp_path):
        check_data(coco_like_config(f'{tmp_path}/missing/'), ['test'])
