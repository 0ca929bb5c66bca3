# Mask R-CNN + FPN, RepNeXt-M5 backbone, COCO 2017, 1x schedule (protocol: see the base).
_base_ = './_base_/mask_rcnn_repnext_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='m5',
        init_cfg=dict(checkpoint='checkpoints/repnext_m5_in1k_backbone.pth')),
    neck=dict(in_channels=[80, 160, 320, 640]))  # RepNeXt-M5 stage widths
