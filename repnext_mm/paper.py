"""The RepNeXt paper's published figures, typed once.

Zhao et al., "RepNeXt: A Fast Multi-Scale CNN using Structural Reparameterization"
(arXiv 2406.16004): ImageNet-1K classifiers (Tables 2 and 3) and the Mask R-CNN / Semantic FPN
backbones (Table 4), for RepNeXt and the baselines the paper compares with. The model zoo
(:mod:`repnext_mm.zoo.metafiles`: results and latencies of ``model-index.yml``) and the
latency-accuracy plot (:mod:`repnext_mm.visualization.latency_plot`) both read these tables.

Latencies are the paper's iPhone 12 measurements (iOS 16, Core ML, mean of 20 runs): classifiers
at their evaluation size, backbones at 512x512. M0 has no published result.
"""
from __future__ import annotations

from dataclasses import dataclass

PAPER_URL = 'https://arxiv.org/abs/2406.16004'
PAPER_TITLE = 'RepNeXt: A Fast Multi-Scale CNN using Structural Reparameterization'


@dataclass(frozen=True)
class ClassifierResult:
    """One ImageNet-1K classifier of the paper's Table 2 (and Table 3 where it is listed).

    Attributes:
        params_m: Parameters in millions (the paper's column: its fused model).
        gmacs: Multiply-accumulates (G) of one image at ``image_size``.
        iphone12_ms: Latency on an iPhone 12 (ms).
        top1: Top-1 (%) with hard distillation from RegNetY-16GF (Table 2).
        top1_plain: Top-1 (%) without distillation (Table 3); ``None`` where not listed.
        image_size: Evaluation image side (FastViT was evaluated at 256).
    """

    params_m: float
    gmacs: float
    iphone12_ms: float
    top1: float
    top1_plain: float | None = None
    image_size: int = 224


@dataclass(frozen=True)
class DenseResult:
    """One backbone of the paper's Table 4 (Mask R-CNN 1x on COCO, Semantic FPN on ADE20K).

    Attributes:
        iphone12_ms: Backbone latency on an iPhone 12 at 512x512 (ms).
        box_ap: COCO box AP of Mask R-CNN.
        mask_ap: COCO mask AP of Mask R-CNN.
        miou: ADE20K mIoU of Semantic FPN.
    """

    iphone12_ms: float
    box_ap: float
    mask_ap: float
    miou: float


#: RepNeXt classifiers, Tables 2 and 3, by arch name of ``RepNeXt.arch_settings``.
REPNEXT_CLASSIFIERS: dict[str, ClassifierResult] = {
    'm1': ClassifierResult(4.8, 0.8, 0.86, 78.8, 77.5),
    'm2': ClassifierResult(6.5, 1.1, 1.00, 80.1, 78.9),
    'm3': ClassifierResult(7.8, 1.3, 1.11, 80.7, 79.4),
    'm4': ClassifierResult(13.3, 2.3, 1.48, 82.3, 81.2),
    'm5': ClassifierResult(21.7, 4.5, 2.20, 83.3, 82.4),
}

#: RepNeXt backbones for detection and segmentation, Table 4.
REPNEXT_DENSE: dict[str, DenseResult] = {
    'm3': DenseResult(5.1, 40.7, 37.8, 40.6),
    'm4': DenseResult(6.6, 42.7, 39.2, 43.3),
    'm5': DenseResult(10.4, 44.7, 40.7, 45.0),
}

#: Baseline families of Table 2 that Figure 1 compares with, by family, then model, in order of
#: latency. Table 3 top-1 is kept where the paper lists the model there.
BASELINE_CLASSIFIERS: dict[str, dict[str, ClassifierResult]] = {
    'RepViT': {
        'M0.9': ClassifierResult(5.1, 0.8, 0.89, 78.7, 77.4),
        'M1.0': ClassifierResult(6.8, 1.1, 1.02, 80.0, 78.6),
        'M1.1': ClassifierResult(8.2, 1.3, 1.13, 80.7, 79.4),
        'M1.5': ClassifierResult(14.0, 2.3, 1.51, 82.3, 81.2),
        'M2.3': ClassifierResult(22.9, 4.5, 2.24, 83.3, 82.5),
    },
    'EfficientFormerV2': {
        'S0': ClassifierResult(3.5, 0.4, 0.91, 75.7, 73.7),
        'S1': ClassifierResult(6.1, 0.7, 1.06, 79.0, 77.9),
        'S2': ClassifierResult(12.6, 1.3, 1.63, 81.6, 80.4),
        'L': ClassifierResult(26.1, 2.6, 2.75, 83.3),
    },
    'FastViT': {
        'T8': ClassifierResult(3.6, 0.7, 0.89, 76.7, 75.6, image_size=256),
        'T12': ClassifierResult(6.8, 1.4, 1.33, 80.3, 79.1, image_size=256),
        'S12': ClassifierResult(8.8, 1.8, 1.51, 80.9, 79.8, image_size=256),
        'SA12': ClassifierResult(10.9, 1.9, 1.66, 81.9, 80.6, image_size=256),
        'SA24': ClassifierResult(20.6, 3.8, 2.78, 83.4, 82.6, image_size=256),
    },
    'SwiftFormer': {
        'XS': ClassifierResult(3.5, 0.6, 1.00, 75.7),
        'S': ClassifierResult(6.1, 1.0, 1.16, 78.5),
        'L1': ClassifierResult(12.1, 1.6, 1.62, 80.9),
        'L3': ClassifierResult(28.5, 4.0, 2.99, 83.0),
    },
    'MobileViG': {
        'Ti': ClassifierResult(5.2, 0.7, 1.27, 75.7),
        'S': ClassifierResult(7.2, 1.0, 1.50, 78.2),
        'M': ClassifierResult(14.0, 1.5, 1.86, 80.6),
        'B': ClassifierResult(26.7, 2.8, 2.87, 82.6),
    },
}


def repnext_top1(distilled: bool = True) -> dict[str, float]:
    """``{arch: ImageNet-1K top-1 %}`` of the RepNeXt classifiers, with or without distillation."""
    top1 = {arch: result.top1 if distilled else result.top1_plain
            for arch, result in REPNEXT_CLASSIFIERS.items()}
    return {arch: value for arch, value in top1.items() if value is not None}


@dataclass(frozen=True)
class AblationResult:
    """One row of the paper's Table 5 (ImageNet-1K, 120 epochs, no distillation).

    Attributes:
        params_m: Parameters in millions (the paper's column).
        iphone12_ms: Latency on an iPhone 12 (ms).
        iphone12_std_ms: The ``\\pm`` spread of that latency (ms).
        rtx3090_images_per_s: Throughput on an RTX 3090 (images/s).
        top1: Top-1 (%) after 120 epochs.
        variant: The row's "Variant" cell.
    """

    params_m: float
    iphone12_ms: float
    iphone12_std_ms: float
    rtx3090_images_per_s: int
    top1: float
    variant: str


#: Table 5, the RepNeXt-M1 rows, by the ``design`` preset of ``RepNeXt`` that builds each one,
#: in the table's order. ``'no_srp'`` is the table's baseline ("None (RepNeXt-M1)": M1 without
#: SRP, Section 4.3); ``'repnext'`` its last row, the released M1 design.
ABLATION_M1_120E: dict[str, AblationResult] = {
    'no_srp': AblationResult(4.82, 0.86, 0.03, 3885, 75.34, 'None (RepNeXt-M1)'),
    'conv3x3_downsample': AblationResult(4.89, 0.87, 0.04, 4078, 74.45,
                                         'simple 3x3 convolution downsample'),
    'no_small_kernel': AblationResult(4.81, 0.85, 0.03, 4017, 75.22, 'remove small kernel'),
    'no_medium_kernel': AblationResult(4.77, 0.85, 0.03, 4341, 75.25, 'remove medium kernel'),
    'no_large_kernel': AblationResult(4.79, 0.84, 0.03, 4332, 75.22, 'remove large kernel'),
    'medium_5x5_3x3': AblationResult(4.82, 0.86, 0.03, 3885, 75.62,
                                     'medium: add 5x5 and 3x3 kernels'),
    'medium_5x3_3x5': AblationResult(4.82, 0.86, 0.03, 3885, 75.69,
                                     'medium: 5x5 and 3x3 -> 5x3 and 3x5 kernels'),
    'medium_strips': AblationResult(4.82, 0.86, 0.03, 3885, 75.71,
                                    'medium: add sequential 1x7, 7x1 and 1x5, 5x1 kernels'),
    'small_serial': AblationResult(4.82, 0.86, 0.03, 3885, 75.84,
                                   'small: add sequential 1x3, 3x1 and dilated 2x2 kernels'),
    'repnext': AblationResult(4.82, 0.86, 0.03, 3885, 75.97,
                              'small: sequential 1x3, 3x1 -> parallel'),
}

#: Table 5, the RepViT rows: RepViT-M0.9 and the same network with RepNeXt's downsample layer.
ABLATION_REPVIT_120E: dict[str, AblationResult] = {
    'repvit_m0_9': AblationResult(5.07, 0.89, 0.01, 4817, 75.19, 'None (RepViT-M0.9)'),
    'repvit_m0_9_repnext_downsample': AblationResult(4.99, 0.89, 0.01, 4731, 75.32,
                                                     "Downsample -> RepNeXt's Downsample"),
}


@dataclass(frozen=True)
class ReadmeResult:
    """A classifier the authors list in their README only (not in the paper).

    Attributes:
        params_m: Parameters in millions.
        gmacs: Multiply-accumulates (G) at 224x224.
        iphone12_ms: Latency on an iPhone 12 (ms).
        top1: Top-1 (%) without distillation.
        top1_distilled: Top-1 (%) with hard distillation from RegNetY-16GF.
    """

    params_m: float
    gmacs: float
    iphone12_ms: float
    top1: float
    top1_distilled: float


#: The single-branch models M0E-M2E of the authors' README ("Models under the StarNet training
#: strategy", github suous/RepNeXt, commit f515377): every block's SRP branches replaced by the
#: one depthwise conv they fuse into, trained as such (300 epochs, StarNet's recipe).
README_SINGLE_BRANCH: dict[str, ReadmeResult] = {
    'm0': ReadmeResult(2.5, 0.5, 0.62, 73.9, 75.6),
    'm1': ReadmeResult(5.3, 1.0, 0.89, 77.7, 79.5),
    'm2': ReadmeResult(7.0, 1.3, 1.04, 78.8, 80.6),
}
README_URL = 'https://github.com/suous/RepNeXt#models-under-the-starnet-training-strategy'
