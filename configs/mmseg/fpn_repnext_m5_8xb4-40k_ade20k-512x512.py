# Semantic FPN + RepNeXt-M5 on ADE20K, 512x512, 40k iterations at 8 GPUs x 4 images.
_base_ = './_base_/fpn_repnext_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='m5',
        init_cfg=dict(checkpoint='checkpoints/repnext_m5_in1k_backbone.pth')),
    neck=dict(in_channels=[80, 160, 320, 640]))  # the stage widths of M5
