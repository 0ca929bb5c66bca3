# Mask R-CNN + FPN, RepNeXt-M1 backbone, COCO 2017, 1x schedule (protocol: see the base).
_base_ = './_base_/mask_rcnn_repnext_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='m1',
        init_cfg=dict(checkpoint='checkpoints/repnext_m1_in1k_backbone.pth')),
    neck=dict(in_channels=[48, 96, 192, 384]))  # RepNeXt-M1 stage widths
