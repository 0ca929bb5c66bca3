# The RepNeXt-M0 Mask R-CNN config, shrunk to run in minutes on a CPU: synthetic shapes data in
# COCO layout (tools/data/make_shapes.py) at 128x128 and a short schedule. The model is the real
# one except for the class count, plain BN and no pretrained backbone; the evaluation is
# mmdet's CocoMetric (pycocotools) for boxes and masks. Used by tools/run_demo.sh and the tests.
_base_ = './mask_rcnn_repnext_m0_fpn_1x_coco.py'

# ------------------------------------ data ------------------------------------
data_root = 'data/shapes/coco/'
# The generator's categories in its order (COCO ids 1..4) and colours (repnext_mm/datasets/shapes.py).
classes = ('circle', 'square', 'star', 'triangle')
metainfo = dict(
    classes=classes, palette=[(220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 225, 25)])
image_scale = (128, 128)  # the generated images' size: no resizing

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# num_workers=0: the images are tiny, and worker processes would only compete with the model
# for the CPU cores (and make the random streams depend on worker scheduling).
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# ----------------------------------- model ------------------------------------
model = dict(
    backbone=dict(norm_cfg=dict(type='BN', requires_grad=True), init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes=len(classes)),
                  mask_head=dict(num_classes=len(classes))),
    # RoI budgets sized for 3 to 5 objects per 128-px image instead of COCO's dozens per
    # 1333x800 image (the network itself is unchanged). On a CPU the RoI heads cost nearly all
    # the time: each positive training RoI and each detection goes through the 4-conv mask
    # head. Training samples 16 RoIs per image instead of 512 (4 positives; every ground-truth
    # box is a candidate: add_gt_as_proposals); inference keeps 300 proposals instead of 1000
    # and 20 detections instead of 100 (4x more than the most objects an image holds).
    train_cfg=dict(rcnn=dict(sampler=dict(num=16))),
    test_cfg=dict(rpn=dict(max_per_img=300), rcnn=dict(max_per_img=20)))
# Plain BN (SyncBN has no CPU kernel) keeps per-process running statistics, so processes of a
# multi-process run drift apart. Averaging the buffers at the end of each epoch makes every
# process validate the same model, the one the checkpoint (saved by rank 0) holds.
custom_hooks = [dict(type='SyncBuffersHook')]

# ---------------------------------- schedule ----------------------------------
# 4 epochs of the 200 images from scratch: 200 steps of 4 images, about 5 minutes on one CPU
# core (tools/run_demo.sh). lr 1e-3 belongs to a total batch of 4; other totals scale it, e.g.
# tools/dist_train.sh CONFIG 2 --cfg-options train_dataloader.batch_size=2 keeps it.
max_epochs = 4
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[3], gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
auto_scale_lr = dict(base_batch_size=4)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(window_size=10)
