# Table 5 of the paper, the last small-kernel row (75.97): the released RepNeXt-M1 design, trained
# 120 epochs; log repnext_m1_120e_7597.txt.
# Protocol (120 epochs, no distillation, 8 GPUs x 256) in the base file.
_base_ = './_base_/repnext_m1_8xb256-120e_in1k.py'

model = dict(backbone=dict(design='repnext'))  # repnext_designs.DESIGNS
