# Table 5 of the paper, the baseline "None (RepNeXt-M1)" (75.34): M1 without SRP; log
# repnext_m1_120e_7534.txt.
# Protocol (120 epochs, no distillation, 8 GPUs x 256) in the base file.
_base_ = './_base_/repnext_m1_8xb256-120e_in1k.py'

model = dict(backbone=dict(design='no_srp'))  # repnext_designs.DESIGNS
