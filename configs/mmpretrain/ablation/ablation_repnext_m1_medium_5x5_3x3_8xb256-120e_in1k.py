# Table 5 of the paper, Medium kernel "add 5x5 and 3x3 kernels" (75.62).
# Protocol (120 epochs, no distillation, 8 GPUs x 256) in the base file.
_base_ = './_base_/repnext_m1_8xb256-120e_in1k.py'

model = dict(backbone=dict(design='medium_5x5_3x3'))  # repnext_designs.DESIGNS
