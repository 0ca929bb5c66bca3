# Semantic FPN + RepNeXt-M1 on ADE20K, 512x512, 40k iterations at 8 GPUs x 4 images.
_base_ = './_base_/fpn_repnext_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='m1',
        init_cfg=dict(checkpoint='checkpoints/repnext_m1_in1k_backbone.pth')),
    neck=dict(in_channels=[48, 96, 192, 384]))  # the stage widths of M1
