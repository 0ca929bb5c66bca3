# CPU-sized training of the real M0 Semantic FPN config on the synthetic shapes data
# (python tools/data/make_shapes.py). Only the data (ADE20K layout under data/shapes/ade,
# 4 classes, 64x64 crops of the 128x128 images), the schedule, plain BN and the random
# initialization differ from fpn_repnext_m0_8xb4-40k_ade20k-512x512.py. The learning test
# (tests/tools/test_learning_seg_cls.py) trains it in 2-3 minutes on 2 CPU cores.
_base_ = './fpn_repnext_m0_8xb4-40k_ade20k-512x512.py'

# ---- data: the shapes ADE20K layout, label 0 = background (ignored by reduce_zero_label) ----
data_root = 'data/shapes/ade'
# Crops of half the image side: the FPN neck and head (256 and 128 channels at stride 4) cost
# far more than M0 itself, so the crop size sets the training time.
crop_size = (64, 64)
# The generator's classes in label order (ADE labels 1..4) and colours (repnext_mm/datasets/shapes.py).
metainfo = dict(
    classes=('circle', 'square', 'star', 'triangle'),
    palette=[[220, 20, 60], [0, 130, 200], [60, 180, 75], [255, 225, 25]])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    # ADE20K's scale jitter (2048x512, 0.5..2) shrunk by 4 with the images; narrower, so the
    # shapes keep their size roughly (a few hundred iterations cannot learn every scale).
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
dataset = dict(
    # BaseSegDataset, not ADE20KDataset: the latter only accepts subsets of its 150 classes.
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=8,
    num_workers=0,  # 128 px images decode faster than worker processes start on 2 cores
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline,
        **dataset))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline,
        **dataset))
test_dataloader = val_dataloader

# ---- model: 4 classes, plain BN (one process), random init (no ImageNet checkpoint) ----
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(norm_cfg=norm_cfg, init_cfg=None),
    decode_head=dict(num_classes=4, norm_cfg=norm_cfg))

# ---- schedule: a few hundred iterations, validation at the end ----
max_iters = 150
optim_wrapper = dict(optimizer=dict(lr=2e-3))  # from scratch and short: 10x the fine-tune lr
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, begin=0, end=20, by_epoch=False),
    dict(type='PolyLR', power=0.9, eta_min=1e-6, begin=20, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1),
)
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
