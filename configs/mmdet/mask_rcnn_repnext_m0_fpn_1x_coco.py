# Mask R-CNN + FPN, RepNeXt-M0 backbone, COCO 2017, 1x schedule (protocol: see the base).
_base_ = './_base_/mask_rcnn_repnext_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='m0',
        init_cfg=dict(checkpoint='checkpoints/repnext_m0_in1k_backbone.pth')),
    neck=dict(in_channels=[40, 80, 160, 320]))  # RepNeXt-M0 stage widths
