# RepNeXt on ImageNet-1K, the paper's recipe (EfficientFormerV2 / RepViT training script, which
# the authors' main.py keeps): 224x224, 300 epochs from scratch, AdamW (eps 1e-8, no weight
# decay on norms and biases), weight decay 0.025 (0.03 for M5), 5 warm-up epochs from 1e-6,
# cosine to 1e-5, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, mixup 0.8 / cutmix 1.0,
# label smoothing 0.1, repeated augmentation. The variant files set the arch and head width.
_base_ = [
    # DeiT's pipeline: bicubic RandomResizedCrop, RandAugment (timm increasing, m9, std 0.5),
    # RandomErasing 0.25; test: resize 256 (crop ratio 0.875), centre crop 224.
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    # AdamW wd 0.025, norm/bias without decay, linear warm-up 5 epochs from 1e-6, cosine to 1e-5.
    'mmpretrain::_base_/schedules/imagenet_bs2048_adamw_levit.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['repnext_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='repnext_mm.RepNeXt',
        arch='m1',
        out_indices=(3, ),
        # Plain BN as the authors (their script never converts to SyncBN): 256 images per GPU
        # give stable statistics.
        norm_cfg=dict(type='BN')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='repnext_mm.RepNeXtClsHead',
        num_classes=1000,
        in_channels=384,
        distill_weight=0.5,
        # timm's smoothing: (1 - 0.1) * target + 0.1 / num_classes, applied to mixed targets too.
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)),
    # timm Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5): one of the two per batch.
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# 8 GPUs x 256 images; RepViT's RASampler (3 repeats, on by default in the authors' script).
train_dataloader = dict(
    batch_size=256,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(_delete_=True, type='RepeatAugSampler', num_repeats=3, shuffle=True))
val_dataloader = dict(batch_size=256, num_workers=8, persistent_workers=True)
test_dataloader = val_dataloader

# Learning rate. The authors' script scales lr = 1e-3 x total batch / 512; their released
# training logs (4 GPUs x 256 = 1024 images) peak at 2e-3 after warm-up. The config keeps that
# verified point (2e-3 at 1024 images) and lets MMEngine apply the same linear rule to the real
# total batch (enable=True), as the authors' script always does: 8 x 256 = 2048 images train at
# 4e-3. Set auto_scale_lr.enable=False to train at 2e-3 whatever the batch.
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.025, eps=1e-8, betas=(0.9, 0.999)),
    # _delete_: drop LeViT's custom key for its attention biases (RepNeXt has none).
    paramwise_cfg=dict(_delete_=True, norm_decay_mult=0.0, bias_decay_mult=0.0))
auto_scale_lr = dict(base_batch_size=1024, enable=True)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 2e-3, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
# Not reproduced from the authors' script: adaptive gradient clipping (AGC, 0.02; MMEngine's
# OptimWrapper clips by norm or value only) and its model EMA (its reported accuracies are those
# of the raw model, which is what this config validates).
