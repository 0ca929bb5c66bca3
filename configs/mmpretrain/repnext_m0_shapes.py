# CPU-sized training of the real M0 ImageNet config on the synthetic shapes data
# (python tools/data/make_shapes.py): only the data (ImageNet-style folders under
# data/shapes/imagenet, 4 classes, 64x64 images, lighter augmentation) and the schedule differ
# from repnext_m0_8xb256_in1k.py. The learning test (tests/tools/test_learning_seg_cls.py)
# trains it in about a minute on 2 CPU cores.
_base_ = './repnext_m0_8xb256_in1k.py'

# ---- data: ImageNet folder layout, classes = sorted folder names ----
data_root = 'data/shapes/imagenet'
# CustomDataset numbers the classes by sorted folder name; the generator's label order
# (repnext_mm/datasets/shapes.py) is alphabetical for that reason. Naming them here puts the
# names into the checkpoint's metadata and predictions.
metainfo = dict(classes=('circle', 'square', 'star', 'triangle'))
img_size = 64
data_preprocessor = dict(num_classes=4)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.5, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=img_size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=0,  # 64 px images decode faster than worker processes start on 2 cores
    persistent_workers=False,
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True),
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='train',
                 metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=50,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='val',
                 metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

# ---- model: 4 classes; no mixup/cutmix (4 classes, a few hundred steps: they only slow it) ----
model = dict(head=dict(num_classes=4, topk=(1, )), train_cfg=None)

# ---- schedule: a few epochs on one CPU process ----
max_epochs = 8  # 7 iterations each at 200 images / 32
optim_wrapper = dict(optimizer=dict(lr=2e-3))
auto_scale_lr = dict(enable=False)  # the lr above is for this batch, not scaled from 1024
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1),
)
randomness = dict(seed=0)
