"""Each branch-to-kernel function against the convolutions it replaces."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repnext_mm.models.layers.reparam import (bn_affine, conv_with_weights, dilate_kernel,
                                              fuse_affine_after_conv, fuse_affine_before_linear,
                                              pad_kernel, serial_strip_kernel)
from tests.helpers import randomize_norms

torch.manual_seed(0)
C = 6


def depthwise(x, weight, bias=None, stride=1, padding=None, dilation=1):
    kh, kw = weight.shape[-2:]
    if padding is None:
        padding = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)
    return F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=C)


@pytest.mark.parametrize('kernel_size', [(1, 3), (3, 1), (3, 5), (5, 3), (5, 5), (3, 3)])
@pytest.mark.parametrize('stride', [1, 2])
def test_pad_kernel_matches_smaller_conv(kernel_size, stride):
    x = torch.randn(2, C, 13, 10)
    weight = torch.randn(C, 1, *kernel_size)
    padded = pad_kernel(weight, (7, 7))
    assert padded.shape == (C, 1, 7, 7)
    torch.testing.assert_close(depthwise(x, padded, stride=stride), depthwise(x, weight, stride=stride))


def test_pad_kernel_rejects_odd_or_shrinking_targets():
    with pytest.raises(ValueError, match='even number'):
        pad_kernel(torch.randn(C, 1, 3, 3), (6, 6))
    with pytest.raises(ValueError, match='at least as large'):
        pad_kernel(torch.randn(C, 1, 7, 7), (3, 3))


@pytest.mark.parametrize('stride', [1, 2])
def test_dilated_2x2_becomes_corner_3x3(stride):
    x = torch.randn(2, C, 11, 12)
    weight = torch.randn(C, 1, 2, 2)
    dense = dilate_kernel(weight, 2)
    assert dense.shape == (C, 1, 3, 3)
    assert torch.count_nonzero(dense[:, :, 1, :]) == 0 and torch.count_nonzero(dense[:, :, :, 1]) == 0
    expected = depthwise(x, weight, stride=stride, padding=1, dilation=2)
    torch.testing.assert_close(depthwise(x, dense, stride=stride), expected)


def test_dilate_kernel_rejects_zero():
    with pytest.raises(ValueError, match='dilation'):
        dilate_kernel(torch.randn(C, 1, 2, 2), 0)


@pytest.mark.parametrize('k', [3, 5, 7])
@pytest.mark.parametrize('stride', [1, 2])
def test_serial_strip_pair_is_one_square_kernel(k, stride):
    x = torch.randn(2, C, 15, 13)
    row, column = torch.randn(C, 1, 1, k), torch.randn(C, 1, k, 1)
    serial = F.conv2d(F.conv2d(x, row, stride=(1, stride), padding=(0, k // 2), groups=C),
                      column, stride=(stride, 1), padding=(k // 2, 0), groups=C)
    merged = serial_strip_kernel(row, column)
    assert merged.shape == (C, 1, k, k)
    torch.testing.assert_close(depthwise(x, merged, stride=stride), serial)


def test_serial_strip_kernel_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r'\(C, 1, 1, k\)'):
        serial_strip_kernel(torch.randn(C, 1, 3, 1), torch.randn(C, 1, 1, 3))


def test_biased_large_strip_pair_is_not_one_kernel():
    """Why LargeStripConv stays two convolutions: the first bias leaks through zero padding."""
    x = torch.randn(1, C, 16, 16)
    row, column = torch.randn(C, 1, 1, 11), torch.randn(C, 1, 11, 1)
    row_bias = torch.randn(C)
    serial = F.conv2d(F.conv2d(x, row, row_bias, padding=(0, 5), groups=C), column, padding=(5, 0),
                      groups=C)
    merged = depthwise(x, serial_strip_kernel(row, column), column.sum((1, 2, 3)) * row_bias)
    interior = (slice(None), slice(None), slice(5, -5), slice(None))
    torch.testing.assert_close(merged[interior], serial[interior])
    assert (merged - serial).abs().max() > 1e-2


def _random_bn(channels, dims=2):
    bn = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels)
    return randomize_norms(bn).eval()


@pytest.mark.parametrize('with_bias', [True, False])
def test_fuse_affine_after_conv_equals_conv_then_bn(with_bias):
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=with_bias)
    bn = _random_bn(8)
    x = torch.randn(2, 4, 9, 9)
    weight, bias = fuse_affine_after_conv(conv.weight, conv.bias, *bn_affine(bn))
    fused = conv_with_weights(conv, weight, bias)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


def test_fuse_affine_before_1x1_conv_and_linear():
    x = torch.randn(2, 8, 5, 5)
    bn = _random_bn(8)
    conv = nn.Conv2d(8, 16, 1)
    weight, bias = fuse_affine_before_linear(conv.weight, conv.bias, *bn_affine(bn))
    with torch.no_grad():
        torch.testing.assert_close(F.conv2d(x, weight, bias), conv(bn(x)), rtol=1e-5, atol=1e-5)

    bn1d, linear = _random_bn(8, dims=1), nn.Linear(8, 3)
    weight, bias = fuse_affine_before_linear(linear.weight, linear.bias, *bn_affine(bn1d))
    v = torch.randn(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(F.linear(v, weight, bias), linear(bn1d(v)), rtol=1e-5, atol=1e-5)


def test_affine_cannot_fold_into_following_spatial_conv():
    with pytest.raises(ValueError, match='1x1'):
        fuse_affine_before_linear(torch.randn(4, 4, 3, 3), None, torch.ones(4), torch.zeros(4))


def test_bn_without_running_stats_is_rejected():
    with pytest.raises(ValueError, match='track_running_stats'):
        bn_affine(nn.BatchNorm2d(4, track_running_stats=False))


def test_merged_kernels_are_differentiable():
    row, column = torch.randn(C, 1, 1, 5, requires_grad=True), torch.randn(C, 1, 5, 1, requires_grad=True)
    small = torch.randn(C, 1, 2, 2, requires_grad=True)
    kernel = pad_kernel(serial_strip_kernel(row, column), (7, 7)) + pad_kernel(dilate_kernel(small, 2), (7, 7))
    kernel.sum().backward()
    assert row.grad is not None and column.grad is not None and small.grad is not None
    torch.testing.assert_close(small.grad, torch.ones_like(small))
