"""Data and annotation paths are checked before a run starts."""
from __future__ import annotations

import pytest
from mmengine.config import Config

from repnext_mm.apis.inputs import check_data
from repnext_mm.utils.errors import InputError


def coco_like_config(data_root: str) -> Config:
    return Config(dict(
        default_scope='mmdet',
        train_dataloader=dict(dataset=dict(
            type='RepeatDataset', times=2,
            dataset=dict(type='CocoDataset', data_root=data_root, ann_file='ann/train.json',
                         data_prefix=dict(img='train/')))),
        val_evaluator=dict(type='CocoMetric', ann_file=f'{data_root}ann/val.json')))


class TestCheckData:

    def test_complete_layout_passes(self, tmp_path):
        (tmp_path / 'ann').mkdir()
        (tmp_path / 'train').mkdir()
        (tmp_path / 'ann' / 'train.json').write_text('{}')
        (tmp_path / 'ann' / 'val.json').write_text('{}')
        check_data(coco_like_config(f'{tmp_path}/'), ['train', 'val'])

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
