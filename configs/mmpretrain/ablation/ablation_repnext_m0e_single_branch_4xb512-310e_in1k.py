# RepNeXt-M0E of the authors' README: M0 with every SRP branch set replaced by the one depthwise
# conv it fuses into (design='single_branch' in the base file), trained as such on the StarNet
# recipe (base file): 4 GPUs x 512 images, 300 + 10 epochs.
_base_ = './_base_/starnet_recipe_4xb512-300e_in1k.py'

# Arch and last-stage width as ../repnext_m0_8xb256_in1k.py.
model = dict(backbone=dict(arch='m0'), head=dict(in_channels=320))
