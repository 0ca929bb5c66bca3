# RepNeXt-M2E with DeiT hard distillation from RegNetY-16GF, as the authors' README row
# "Top-1 / top-5 (distill)": their args file
# logs/strategy/repnext_m2_sz224_4xbs256_ep300_distill_args.yaml
# differs from the plain one only in `batch_size: 256` (4 GPUs x 256 = 1024 images, same
# `lr: 0.003`) and `distillation_type: hard`, `distillation_alpha: 0.5`, `distillation_tau: 1.0`,
# `teacher_model: regnety_160` (DeiT's checkpoint).
_base_ = ['./ablation_repnext_m2e_single_branch_4xb512-310e_in1k.py',
          '../_base_/deit_regnety16gf_teacher.py']

model = dict(
    type='repnext_mm.DistillImageClassifier',
    teacher={{_base_.teacher}},
    teacher_checkpoint={{_base_.teacher_checkpoint}})
train_dataloader = dict(batch_size=256)
auto_scale_lr = dict(base_batch_size=1024)  # lr 3e-3 at 4 x 256 images
