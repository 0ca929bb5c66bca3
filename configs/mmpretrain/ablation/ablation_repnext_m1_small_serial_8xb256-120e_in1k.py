# Table 5 of the paper, Small kernel "add sequential 1x3, 3x1 and dilated 2x2 kernels" (75.84).
# Protocol (120 epochs, no distillation, 8 GPUs x 256) in the base file.
_base_ = './_base_/repnext_m1_8xb256-120e_in1k.py'

model = dict(backbone=dict(design='small_serial'))  # repnext_designs.DESIGNS
