"""Every mmseg and mmpretrain config builds its model and runs one tiny batch.

Each config is loaded the way tools/train.py loads it (``mmseg::`` / ``mmpretrain::`` bases,
``custom_imports``, ``default_scope``), its model built from the root registry under that scope,
then trained for one step (loss + backward) and run in predict mode on 64x64 inputs. The
protocol numbers the paper fixes are asserted too, so that an edit cannot quietly change them.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.model.utils import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope
from mmengine.utils import import_modules_from_strings

from repnext_mm.datasets.shapes import CLASSES as SHAPES_CLASSES
from repnext_mm.models.backbones import RepNeXt
from tests.helpers import REPO, first_quick_rest_slow

SEG_DIR = REPO / 'configs/mmseg'
CLS_DIR = REPO / 'configs/mmpretrain'
ARCHS = tuple(RepNeXt.arch_settings)
SEG_CONFIGS = [f'fpn_repnext_{a}_8xb4-40k_ade20k-512x512.py' for a in ARCHS]
CLS_CONFIGS = [f'repnext_{a}_8xb256_in1k.py' for a in ARCHS]
DISTILL_CONFIGS = [f'repnext_{a}_8xb256_in1k_distill.py' for a in ARCHS]
TINY = 64

# One thread: on 2 CPU cores shared with other processes, PyTorch's OpenMP worker threads
# spin-wait for each other and a 64x64 forward took tens of seconds instead of a fraction of one.
pytestmark = pytest.mark.usefixtures('one_cpu_thread')


def widths(arch: str) -> list[int]:
    return list(RepNeXt.arch_settings[arch]['widths'])


def load(path: Path) -> Config:
    cfg = Config.fromfile(str(path))
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.default_scope)
    return cfg


def build_model(cfg: Config) -> torch.nn.Module:
    """Builds ``cfg.model`` as MMEngine's Runner does (top-level data_preprocessor merged in)."""
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    # The Runner reverts SyncBN when it is not distributed; do the same on this CPU.
    return revert_sync_batchnorm(MODELS.build(model_cfg))


def assert_trains_one_step(model: torch.nn.Module, data: dict) -> dict:
    model.train()
    processed = model.data_preprocessor(copy.deepcopy(data), training=True)
    losses = model(**processed, mode='loss')
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total), losses
    total.backward()
    stem_grad = next(model.backbone.parameters()).grad
    assert stem_grad is not None and stem_grad.abs().sum() > 0  # the backbone gets gradients
    return losses


def test_every_variant_has_its_configs():
    assert sorted(p.name for p in SEG_DIR.glob('*.py')) == sorted(
        SEG_CONFIGS + ['fpn_repnext_m0_shapes.py'])
    assert sorted(p.name for p in CLS_DIR.glob('*.py')) == sorted(
        CLS_CONFIGS + DISTILL_CONFIGS + ['repnext_m0_shapes.py'])


# ------------------------------------------------------------------ mmseg


def seg_batch(num_classes: int) -> dict:
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (3, TINY, TINY), dtype=torch.uint8, generator=gen))
        label = torch.randint(0, num_classes, (1, TINY, TINY), generator=gen)
        label[:, :8] = 255  # some ignored pixels, as reduce_zero_label produces
        sample = SegDataSample(gt_sem_seg=PixelData(data=label))
        sample.set_metainfo(dict(img_shape=(TINY, TINY), ori_shape=(TINY, TINY),
                                 pad_shape=(TINY, TINY)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def check_seg_model(cfg: Config, num_classes: int) -> None:
    cfg.model.data_preprocessor.size = (TINY, TINY)  # a tiny batch instead of 512x512 crops
    model = build_model(cfg)
    data = seg_batch(num_classes)
    losses = assert_trains_one_step(model, data)
    assert 'decode.loss_ce' in losses
    model.eval()
    with torch.no_grad():
        predictions = model.test_step(copy.deepcopy(data))
    assert predictions[0].pred_sem_seg.data.shape == (1, TINY, TINY)
    assert predictions[0].seg_logits.data.shape == (num_classes, TINY, TINY)


@pytest.mark.parametrize('name', first_quick_rest_slow(SEG_CONFIGS))
def test_ade20k_config_follows_the_protocol_and_runs(name):
    arch = name.split('_')[2]
    cfg = load(SEG_DIR / name)
    assert cfg.default_scope == 'mmseg'
    backbone = cfg.model.backbone
    assert backbone.type == 'repnext_mm.RepNeXt' and backbone.arch == arch
    assert backbone.out_indices == (0, 1, 2, 3)
    assert backbone.norm_cfg.type == cfg.model.decode_head.norm_cfg.type == 'SyncBN'
    assert backbone.init_cfg == dict(type='Pretrained', prefix='backbone.',
                                     checkpoint=f'checkpoints/repnext_{arch}_in1k_backbone.pth')
    assert cfg.model.pretrained is None
    assert cfg.model.neck.in_channels == widths(arch)
    assert cfg.model.decode_head.channels == 128 and cfg.model.decode_head.num_classes == 150
    assert cfg.crop_size == (512, 512) and cfg.model.data_preprocessor.size == (512, 512)
    assert cfg.train_dataloader.batch_size == 4  # x 8 GPUs = 32
    assert cfg.train_cfg.max_iters == 40000
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.optimizer.lr == 2e-4
    [poly] = cfg.param_scheduler
    assert poly.type == 'PolyLR' and poly.power == 0.9 and poly.end == 40000
    check_seg_model(cfg, num_classes=150)


def align_resize_shape(height: int, width: int) -> tuple[int, int]:
    """The authors' ADE20K test resize (``segmentation/align_resize.py``, ``keep_ratio=True``):
    mmcv's keep-ratio rescale to (2048, 512), then each side rounded up to a multiple of 32."""
    factor = min(2048 / max(height, width), 512 / min(height, width))
    height, width = int(height * factor + 0.5), int(width * factor + 0.5)
    return math.ceil(height / 32) * 32, math.ceil(width / 32) * 32


@pytest.mark.parametrize('size', [(512, 683), (375, 500), (1536, 2048), (256, 2560)])
def test_ade20k_test_pipeline_resizes_like_the_authors_align_resize(size):
    from mmcv.transforms import Compose

    cfg = load(SEG_DIR / SEG_CONFIGS[-1])
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        steps = [step.type for step in loader.dataset.pipeline]
        assert steps == ['LoadImageFromFile', 'Resize', 'ResizeToMultiple', 'LoadAnnotations',
                         'PackSegInputs']
    resize = Compose(cfg.test_dataloader.dataset.pipeline[1:3])
    result = resize(dict(img=np.zeros((*size, 3), np.uint8), img_shape=size, ori_shape=size))
    assert result['img'].shape[:2] == result['img_shape'] == align_resize_shape(*size)


def test_seg_shapes_config_changes_only_data_and_schedule():
    cfg = load(SEG_DIR / 'fpn_repnext_m0_shapes.py')
    real = load(SEG_DIR / 'fpn_repnext_m0_8xb4-40k_ade20k-512x512.py')
    assert cfg.model.backbone.arch == 'm0' and cfg.model.backbone.init_cfg is None
    assert cfg.model.backbone.norm_cfg.type == cfg.model.decode_head.norm_cfg.type == 'BN'
    assert cfg.model.decode_head.num_classes == len(SHAPES_CLASSES)
    assert cfg.train_dataloader.dataset.metainfo.classes == SHAPES_CLASSES
    assert cfg.train_dataloader.dataset.data_root == 'data/shapes/ade'
    assert cfg.train_dataloader.dataset.reduce_zero_label
    for key in ('neck', 'type'):
        assert cfg.model[key] == real.model[key]
    for key in ('channels', 'in_channels', 'loss_decode', 'dropout_ratio'):
        assert cfg.model.decode_head[key] == real.model.decode_head[key]
    assert cfg.optim_wrapper.optimizer.type == real.optim_wrapper.optimizer.type
    assert cfg.train_cfg.max_iters <= 500
    check_seg_model(cfg, num_classes=len(SHAPES_CLASSES))


# ------------------------------------------------------------ mmpretrain


def cls_batch(num_classes: int) -> dict:
    from mmpretrain.structures import DataSample

    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, TINY, TINY), dtype=torch.uint8, generator=gen)
              for _ in range(2)]
    samples = [DataSample().set_gt_label(i % num_classes) for i in range(2)]
    return dict(inputs=inputs, data_samples=samples)


def check_cls_model(cfg: Config, num_classes: int) -> torch.nn.Module:
    model = build_model(cfg)
    data = cls_batch(num_classes)
    losses = assert_trains_one_step(model, data)
    model.eval()
    with torch.no_grad():
        predictions = model.test_step(copy.deepcopy(data))
    assert predictions[0].pred_score.shape == (num_classes, )
    return model, losses


def assert_imagenet_recipe(cfg: Config, arch: str) -> None:
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.model.backbone.type == 'repnext_mm.RepNeXt' and cfg.model.backbone.arch == arch
    assert cfg.model.backbone.out_indices == (3, )
    assert cfg.model.neck.type == 'GlobalAveragePooling'
    head = cfg.model.head
    assert head.type == 'repnext_mm.RepNeXtClsHead' and head.in_channels == widths(arch)[-1]
    assert head.num_classes == 1000 and head.distill_weight == 0.5
    assert head.loss.type == 'LabelSmoothLoss' and head.loss.label_smooth_val == 0.1
    assert [a.type for a in cfg.model.train_cfg.augments] == ['Mixup', 'CutMix']
    assert cfg.train_dataloader.batch_size == 256
    assert cfg.train_cfg.max_epochs == 300
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW' and optimizer.lr == 2e-3
    assert optimizer.weight_decay == (0.03 if arch == 'm5' else 0.025)
    assert cfg.auto_scale_lr == dict(base_batch_size=1024, enable=True)
    warmup, cosine = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.end == 5
    assert cosine.type == 'CosineAnnealingLR' and cosine.begin == 5
    [randaug] = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandAugment']
    assert (randaug.policies, randaug.num_policies, randaug.magnitude_level,
            randaug.magnitude_std) == ('timm_increasing', 2, 9, 0.5)
    assert cfg.train_dataloader.dataset.pipeline[1].scale == 224


@pytest.mark.parametrize('name', first_quick_rest_slow(CLS_CONFIGS))
def test_imagenet_config_follows_the_recipe_and_runs(name):
    arch = name.split('_')[1]
    cfg = load(CLS_DIR / name)
    assert cfg.model.type == 'ImageClassifier'
    assert_imagenet_recipe(cfg, arch)
    _, losses = check_cls_model(cfg, num_classes=1000)
    assert set(losses) == {'loss'}


@pytest.mark.parametrize('name', first_quick_rest_slow(DISTILL_CONFIGS))
def test_distill_config_adds_only_the_teacher_and_runs(name):
    arch = name.split('_')[1]
    cfg = load(CLS_DIR / name)
    assert cfg.model.type == 'repnext_mm.DistillImageClassifier'
    assert_imagenet_recipe(cfg, arch)
    assert cfg.model.teacher == dict(type='TimmClassifier', model_name='regnety_160',
                                     pretrained=False)
    assert cfg.model.teacher_checkpoint == 'checkpoints/regnety_160-a5fe301d.pth'
    plain = load(CLS_DIR / name.replace('_distill', ''))
    for key in ('backbone', 'neck', 'head', 'train_cfg'):
        assert cfg.model[key] == plain.model[key]
    model, losses = check_cls_model(cfg, num_classes=1000)
    assert set(losses) == {'loss', 'loss_distill'}  # the teacher's labels reached the head
    assert type(model.teacher).__name__ == 'TimmClassifier'


def test_cls_shapes_config_changes_only_data_and_schedule():
    cfg = load(CLS_DIR / 'repnext_m0_shapes.py')
    real = load(CLS_DIR / 'repnext_m0_8xb256_in1k.py')
    assert cfg.model.backbone == real.model.backbone
    assert cfg.model.backbone.norm_cfg.type == 'BN'
    assert cfg.model.head.num_classes == cfg.data_preprocessor.num_classes == len(SHAPES_CLASSES)
    for key in ('type', 'in_channels', 'loss', 'distill_weight'):
        assert cfg.model.head[key] == real.model.head[key]
    assert cfg.train_dataloader.dataset.type == 'CustomDataset'
    assert cfg.train_dataloader.dataset.data_root == 'data/shapes/imagenet'
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.train_cfg.max_epochs <= 20
    check_cls_model(cfg, num_classes=len(SHAPES_CLASSES))
