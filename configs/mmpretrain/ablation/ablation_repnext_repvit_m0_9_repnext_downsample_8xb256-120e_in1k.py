# Table 5 of the paper, RepViT "Downsample -> RepNeXt's Downsample" (75.32): RepViT-M0.9 with the
# downsample layer of stages 1-3 replaced by RepNeXt's (repnext_mm/models/backbones/repvit.py).
_base_ = './ablation_repnext_repvit_m0_9_8xb256-120e_in1k.py'

model = dict(backbone=dict(repnext_downsample=True))
