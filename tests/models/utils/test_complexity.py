"""repnext_mm/models/utils/complexity.py: parameter and MAC counts."""
import pytest
import torch
from torch import nn

from repnext_mm.models.backbones.repnext import RepNeXt
from repnext_mm.models.utils.complexity import count_macs, count_params


def test_count_macs_counts_conv_and_linear_only():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 4)).eval()
    expected = 8 * 3 * 9 * 8 * 8 + 8 * 8 * 8 * 4
    assert count_macs(model, torch.randn(1, 3, 8, 8)) == expected


def test_count_macs_of_fused_m0_matches_reference():
    # reference-facts.md: 0.388 GMACs at 224 for the fused M0 classifier, whose head adds 320x1000.
    model = RepNeXt('m0', deploy=True).eval()
    macs = count_macs(model, torch.randn(1, 3, 224, 224)) + 320 * 1000
    assert macs / 1e9 == pytest.approx(0.388, rel=0.01)


def test_count_params_excludes_buffers():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8))
    assert count_params(model) == (3 * 8 + 8) + (8 + 8)  # not BN's running statistics
