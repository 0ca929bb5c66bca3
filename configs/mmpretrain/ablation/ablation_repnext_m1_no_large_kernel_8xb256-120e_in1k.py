# Table 5 of the paper, Branch "remove large kernel" (75.22).
# Protocol (120 epochs, no distillation, 8 GPUs x 256) in the base file.
_base_ = './_base_/repnext_m1_8xb256-120e_in1k.py'

model = dict(backbone=dict(design='no_large_kernel'))  # repnext_designs.DESIGNS
