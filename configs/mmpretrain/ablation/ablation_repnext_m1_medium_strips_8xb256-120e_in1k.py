# Table 5 of the paper, Medium kernel "add sequential 1x7, 7x1 and 1x5, 5x1 kernels" (75.71).
# Protocol (120 epochs, no distillation, 8 GPUs x 256) in the base file.
_base_ = './_base_/repnext_m1_8xb256-120e_in1k.py'

model = dict(backbone=dict(design='medium_strips'))  # repnext_designs.DESIGNS
