# RepNeXt-M5 on ImageNet-1K: 300 epochs, 8 GPUs x 256 images (recipe in the base file).
_base_ = './_base_/repnext_8xb256_in1k.py'

model = dict(backbone=dict(arch='m5'), head=dict(in_channels=640))  # last-stage width
# The paper's M5 uses a stronger weight decay.
optim_wrapper = dict(optimizer=dict(weight_decay=0.03))
