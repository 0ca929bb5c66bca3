# RepNeXt-M5 on ImageNet-1K with DeiT hard distillation from RegNetY-16GF (the paper's
# reported models). The student's checkpoints hold the student only and load into
# repnext_m5_8xb256_in1k.py for testing.
_base_ = ['./repnext_m5_8xb256_in1k.py', './_base_/deit_regnety16gf_teacher.py']

model = dict(
    type='repnext_mm.DistillImageClassifier',
    teacher={{_base_.teacher}},
    teacher_checkpoint={{_base_.teacher_checkpoint}})
