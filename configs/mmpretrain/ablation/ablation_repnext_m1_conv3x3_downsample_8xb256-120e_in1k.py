# Table 5 of the paper, Downsample "simple 3x3 convolution" (74.45).
# Protocol (120 epochs, no distillation, 8 GPUs x 256) in the base file.
_base_ = './_base_/repnext_m1_8xb256-120e_in1k.py'

model = dict(backbone=dict(design='conv3x3_downsample'))  # repnext_designs.DESIGNS
