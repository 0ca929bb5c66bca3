# Semantic FPN + RepNeXt-M4 on ADE20K, 512x512, 40k iterations at 8 GPUs x 4 images.
_base_ = './_base_/fpn_repnext_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='m4',
        init_cfg=dict(checkpoint='checkpoints/repnext_m4_in1k_backbone.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))  # the stage widths of M4
