# RepNeXt-M0 on ImageNet-1K: 300 epochs, 8 GPUs x 256 images (recipe in the base file).
_base_ = './_base_/repnext_8xb256_in1k.py'

model = dict(backbone=dict(arch='m0'), head=dict(in_channels=320))  # last-stage width
