# Table 5 of the paper, RepViT "None (RepViT-M0.9)" (75.19): timm's repvit_m0_9 (random weights)
# as the backbone, the RepNeXt head (BN + Linear, with a distillation twin, as RepViT's), on the
# same 120-epoch protocol (base file; the authors' main.py is RepViT's training script).
_base_ = './_base_/repnext_m1_8xb256-120e_in1k.py'
custom_imports = dict(imports=['repnext_mm', 'repnext_mm.models.backbones.repvit'],
                      allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='repnext_mm.RepViTBackbone', model_name='repvit_m0_9',
                  out_indices=(3, )),
    head=dict(in_channels=384))  # RepViT-M0.9's last-stage width
