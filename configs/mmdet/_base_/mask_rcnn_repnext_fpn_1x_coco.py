# Mask R-CNN + FPN with a RepNeXt backbone on COCO 2017, 1x schedule: the paper's protocol.
#
# Paper (Mask R-CNN on COCO, following EfficientFormerV2): FPN on the four stage outputs
# (in_channels = stage widths, 256 channels, 5 levels), AdamW lr 2e-4, weight decay 0.05,
# 12 epochs with LR steps at epochs 8 and 11, 500-iteration linear warm-up, 1333x800 images,
# 16 images per batch (8 GPUs x 2). Everything not set here comes unchanged from mmdet's bases.
#
# The per-arch configs (mask_rcnn_repnext_m{0..5}_fpn_1x_coco.py) set only the arch, the FPN
# in_channels (= RepNeXt.arch_settings[arch]['widths']) and the pretrained backbone file.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['repnext_mm'], allow_failed_imports=False)

# BatchNorm over the whole 16-image batch on GPUs. Single-process runs (one GPU or CPU) need no
# change: MMEngine's Runner turns SyncBN into plain BN when it is not distributed. SyncBN runs
# on CUDA only, so multi-process CPU runs (tools/dist_train.sh with gloo) switch to plain BN with
#   --cfg-options model.backbone.norm_cfg.type=BN
norm_cfg = dict(type='SyncBN', requires_grad=True)

# Activation checkpointing is off. To train in less GPU memory (a larger backbone, more images per
# GPU) at the cost of running each backbone block's forward again in backward:
#   --cfg-options model.backbone.with_cp=True
# (tools/analysis/speed.py --sections with_cp measures both memory and time.)
model = dict(
    backbone=dict(
        _delete_=True,  # drop the ResNet-only keys (depth, style, ...) of the base
        type='repnext_mm.RepNeXt',
        arch='m4',
        out_indices=(0, 1, 2, 3),
        # Every stage trains and BN statistics update: the ResNet base's frozen_stages=1 and
        # norm_eval=True were silently dropped by the authors' backbone factory, so their
        # published numbers come from this setting.
        frozen_stages=-1,
        norm_eval=False,
        norm_cfg=norm_cfg,
        # An ImageNet-1K backbone state dict (keys 'backbone.*', e.g. an mmpretrain checkpoint or
        # the authors' release converted with tools/deploy/convert_official.py). Read only when
        # training starts; testing a trained detector never needs it.
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/repnext_m4_in1k_backbone.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=256, num_outs=5))

# 2 images per GPU come from the base dataloader; 8 GPUs x 2 = the paper's batch of 16.
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05))

# The schedule base already holds the 1x protocol: 12 epochs, LinearLR warm-up over the first
# 500 iterations (start factor 0.001), MultiStepLR x0.1 at epochs 8 and 11.

# lr 2e-4 belongs to a batch of 16; other total batch sizes (GPUs x batch_size) scale it linearly.
auto_scale_lr = dict(enable=True, base_batch_size=16)

# Evaluation: the test pipeline of mmdet 3.3's COCO base is the authors' (their coco_instance.py,
# also recorded in detection/logs/*.json), single scale without flip: keep-ratio resize to
# (1333, 800), ImageNet mean/std normalization in RGB and zero padding to a multiple of 32. mmdet
# 3 normalizes and pads in the model's data_preprocessor (pad_size_divisor=32) instead of the
# pipeline. tests/configs/test_mmdet_configs.py checks it.
