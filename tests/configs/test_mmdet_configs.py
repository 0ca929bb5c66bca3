"""The mmdet configs: the paper's Mask R-CNN protocol, and every config builds and runs a batch."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import repnext_mm  # noqa: F401  (registers repnext_mm.RepNeXt, as custom_imports does)
from repnext_mm.models.backbones.repnext import RepNeXt
from tests.helpers import REPO, first_quick_rest_slow

CONFIG_DIR = REPO / 'configs' / 'mmdet'
ARCHS = tuple(sorted(RepNeXt.arch_settings))
ARCH_CONFIGS = {arch: CONFIG_DIR / f'mask_rcnn_repnext_{arch}_fpn_1x_coco.py' for arch in ARCHS}
ALIAS_CONFIG = CONFIG_DIR / 'mask_rcnn_repnext_m4.py'
SHAPES_CONFIG = CONFIG_DIR / 'mask_rcnn_repnext_m0_fpn_shapes.py'
ALL_CONFIGS = sorted(CONFIG_DIR.glob('*.py'))


def load(path: Path) -> Config:
    return Config.fromfile(str(path))


def test_every_config_file_is_one_of_the_tested_ones():
    # A config added later must be added here too, so that the build test below covers it.
    expected = {*ARCH_CONFIGS.values(), ALIAS_CONFIG, SHAPES_CONFIG}
    assert set(ALL_CONFIGS) == expected


@pytest.mark.parametrize('arch', first_quick_rest_slow(ARCHS))
def test_paper_protocol(arch):
    cfg = load(ARCH_CONFIGS[arch])
    assert cfg.default_scope == 'mmdet'
    assert 'repnext_mm' in cfg.custom_imports['imports']

    backbone = cfg.model.backbone
    assert cfg.model.type == 'MaskRCNN'
    assert backbone.type == 'repnext_mm.RepNeXt' and backbone.arch == arch
    assert tuple(backbone.out_indices) == (0, 1, 2, 3)
    assert backbone.frozen_stages == -1 and backbone.norm_eval is False
    assert backbone.norm_cfg.type == 'SyncBN'
    assert backbone.init_cfg == dict(type='Pretrained', prefix='backbone.',
                                     checkpoint=f'checkpoints/repnext_{arch}_in1k_backbone.pth')
    # Only RepNeXt keys are left: a leftover ResNet key (depth, style) would fail the build.
    assert set(backbone) <= {'type', 'arch', 'out_indices', 'frozen_stages', 'norm_eval',
                             'norm_cfg', 'init_cfg'}

    neck = cfg.model.neck
    assert list(neck.in_channels) == list(RepNeXt.arch_settings[arch]['widths'])
    assert neck.type == 'FPN' and neck.out_channels == 256 and neck.num_outs == 5
    assert cfg.model.roi_head.bbox_head.num_classes == 80

    optimizer = cfg.optim_wrapper.optimizer
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert optimizer.type == 'AdamW' and optimizer.lr == 2e-4 and optimizer.weight_decay == 0.05
    assert 'momentum' not in optimizer  # the SGD base's momentum must not reach AdamW

    assert cfg.train_cfg.type == 'EpochBasedTrainLoop' and cfg.train_cfg.max_epochs == 12
    warmup, steps = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.by_epoch is False
    assert (warmup.begin, warmup.end) == (0, 500)
    assert steps.type == 'MultiStepLR' and steps.by_epoch is True
    assert list(steps.milestones) == [8, 11] and steps.gamma == 0.1 and steps.end == 12

    # 8 GPUs x 2 images; other batch sizes scale the lr linearly from 16.
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=16)

    for pipeline in (cfg.train_dataloader.dataset.pipeline, cfg.test_dataloader.dataset.pipeline):
        resize = [step for step in pipeline if step.type == 'Resize']
        assert len(resize) == 1 and tuple(resize[0].scale) == (1333, 800)
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert cfg.val_evaluator.type == 'CocoMetric'
    assert list(cfg.val_evaluator.metric) == ['bbox', 'segm']


def test_coco_evaluation_is_the_authors_test_pipeline():
    """Their coco_instance.py: MultiScaleFlipAug((1333, 800), flip=False) around a keep-ratio
    Resize, Normalize (ImageNet mean/std, to_rgb) and Pad(size_divisor=32)."""
    cfg = load(ARCH_CONFIGS['m4'])
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        steps = [step.type for step in loader.dataset.pipeline]
        assert steps == ['LoadImageFromFile', 'Resize', 'LoadAnnotations', 'PackDetInputs']
        resize = loader.dataset.pipeline[1]
        assert tuple(resize.scale) == (1333, 800) and resize.keep_ratio is True
    preprocessor = cfg.model.data_preprocessor
    assert list(preprocessor.mean) == [123.675, 116.28, 103.53]
    assert list(preprocessor.std) == [58.395, 57.12, 57.375]
    assert preprocessor.bgr_to_rgb is True and preprocessor.pad_size_divisor == 32


def test_m4_alias_is_the_m4_config():
    alias, m4 = load(ALIAS_CONFIG).to_dict(), load(ARCH_CONFIGS['m4']).to_dict()
    assert alias == m4


def _without(tree: dict, *dotted_keys: str) -> dict:
    tree = copy.deepcopy(tree)
    for dotted in dotted_keys:
        *parents, last = dotted.split('.')
        node = tree
        for key in parents:
            node = node[key]
        node.pop(last, None)
    return tree


def _lookup(tree: dict, dotted_key: str):
    for key in dotted_key.split('.'):
        tree = tree[key]
    return tree


def test_shapes_config_changes_only_data_schedule_classes_norms_box_loss_init_and_roi_budgets():
    shapes, m0 = load(SHAPES_CONFIG), load(ARCH_CONFIGS['m0'])
    roi_budgets = ('train_cfg.rcnn.sampler.num', 'test_cfg.rpn.max_per_img',
                   'test_cfg.rcnn.max_per_img')
    head_changes = ('neck.norm_cfg', 'roi_head.mask_head.norm_cfg',
                    'roi_head.bbox_head.reg_decoded_bbox', 'roi_head.bbox_head.loss_bbox')
    allowed = ('backbone.norm_cfg', 'backbone.init_cfg', 'roi_head.bbox_head.num_classes',
               'roi_head.mask_head.num_classes', *roi_budgets, *head_changes)
    assert _without(shapes.model.to_dict(), *allowed) == _without(m0.model.to_dict(), *allowed)
    assert shapes.model.backbone.norm_cfg.type == 'BN'
    # From-scratch training in minutes: GroupNorm in the FPN and mask head, GIoU box loss.
    assert shapes.model.neck.norm_cfg.type == shapes.model.roi_head.mask_head.norm_cfg.type == 'GN'
    assert shapes.model.roi_head.bbox_head.loss_bbox.type == 'GIoULoss'
    assert shapes.model.roi_head.bbox_head.reg_decoded_bbox is True
    assert shapes.model.backbone.init_cfg is None
    assert shapes.model.roi_head.bbox_head.num_classes == len(shapes.metainfo['classes']) == 4
    assert shapes.model.roi_head.mask_head.num_classes == 4
    # Only smaller RoI budgets (few objects per small image): the network is the same.
    for key in roi_budgets:
        shapes_value, m0_value = (_lookup(cfg.model.to_dict(), key) for cfg in (shapes, m0))
        assert shapes_value < m0_value, key
    # Same optimizer apart from the lr.
    assert _without(shapes.optim_wrapper.to_dict(), 'optimizer.lr') == \
        _without(m0.optim_wrapper.to_dict(), 'optimizer.lr')
    assert shapes.val_evaluator.type == 'CocoMetric'
    assert list(shapes.val_evaluator.metric) == ['bbox', 'segm']
    assert shapes.train_dataloader.dataset.data_root == 'data/shapes/coco/'


def one_image_batch(size: int = 64) -> dict:
    """A raw batch with one ``size`` x ``size`` image holding one box and its mask."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
    sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                         scale_factor=(1.0, 1.0), pad_shape=(size, size)))
    box = [8.0, 10.0, 40.0, 50.0]
    mask = torch.zeros(1, size, size, dtype=torch.uint8)
    mask[:, 10:50, 8:40] = 1
    sample.gt_instances = InstanceData(bboxes=torch.tensor([box]), labels=torch.tensor([0]),
                                       masks=BitmapMasks(mask.numpy(), size, size))
    return dict(inputs=[image], data_samples=[sample])


@pytest.mark.parametrize('config', first_quick_rest_slow(ALL_CONFIGS), ids=lambda path: path.stem)
def test_config_builds_and_runs_one_batch(config, one_cpu_thread):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    cfg = load(config)
    init_default_scope(cfg.default_scope)
    # The documented single-process switch; no init_weights: the pretrained files are not here.
    cfg.model.backbone.norm_cfg.type = 'BN'
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, RepNeXt)

    model.train()
    data = model.data_preprocessor(one_image_batch(), training=True)
    losses = model(**data, mode='loss')
    for name in ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'):
        assert name in losses, f'{name} missing from {sorted(losses)}'
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    stem_grad = model.backbone.stem[0].conv.weight.grad
    assert stem_grad is not None and stem_grad.abs().sum() > 0  # the loss reaches the backbone

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(one_image_batch(), training=False)
        (prediction,) = model(**data, mode='predict')
    instances = prediction.pred_instances
    assert instances.bboxes.shape[-1] == 4
    assert len(instances.masks) == len(instances.bboxes) == len(instances.scores)
