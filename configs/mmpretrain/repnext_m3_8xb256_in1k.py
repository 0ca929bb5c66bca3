# RepNeXt-M3 on ImageNet-1K: 300 epochs, 8 GPUs x 256 images (recipe in the base file).
_base_ = './_base_/repnext_8xb256_in1k.py'

model = dict(backbone=dict(arch='m3'), head=dict(in_channels=512))  # last-stage width
