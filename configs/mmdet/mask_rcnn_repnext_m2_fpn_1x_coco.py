# Mask R-CNN + FPN, RepNeXt-M2 backbone, COCO 2017, 1x schedule (protocol: see the base).
_base_ = './_base_/mask_rcnn_repnext_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='m2',
        init_cfg=dict(checkpoint='checkpoints/repnext_m2_in1k_backbone.pth')),
    neck=dict(in_channels=[56, 112, 224, 448]))  # RepNeXt-M2 stage widths
