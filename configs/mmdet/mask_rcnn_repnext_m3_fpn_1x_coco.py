# Mask R-CNN + FPN, RepNeXt-M3 backbone, COCO 2017, 1x schedule (protocol: see the base).
_base_ = './_base_/mask_rcnn_repnext_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='m3',
        init_cfg=dict(checkpoint='checkpoints/repnext_m3_in1k_backbone.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))  # RepNeXt-M3 stage widths
