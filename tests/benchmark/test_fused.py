"""The authors' partial fusion, the fused variants and the GEMM floor."""
import importlib.util

import pytest
import torch

from repnext_mm.benchmark.fused import (FULL_EAGER, FULL_OPENVINO, FULL_ORT, PARTIAL_EAGER, UNFUSED,
                                        authors_partial_fusion, build_fused_variants,
                                        check_same_outputs, floor_samples, gemm_callable)
from repnext_mm.models.utils.reparameterize import count_batchnorms
from repnext_mm.models.backbones.repnext import ConvNorm, RepDWConvM, RepDWConvS, RepNeXt
from tests.helpers import max_rel_error, randomize_norms

TINY = dict(widths=[8, 16, 32, 64], depths=[1, 1, 1, 1])


def test_partial_fusion_keeps_the_bn_after_chunk_and_copy_convs_and_the_outputs():
    model = randomize_norms(RepNeXt(TINY, srp_forward='branches')).eval()
    partial = authors_partial_fusion(model)
    names = [name for name, m in partial.named_modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    # one BN after each of the 4 blocks' chunk convs and the 3 downsamples' copy convs
    assert count_batchnorms(partial) == len(names) == 4 + 3
    assert all(name.endswith('.norm') for name in names)
    assert all(m.deploy for m in partial.modules()
               if isinstance(m, (ConvNorm, RepDWConvS, RepDWConvM)))
    assert count_batchnorms(model) > 7, 'the original model must be left unchanged'
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for out, ref in zip(partial(x), model(x)):
            assert max_rel_error(out, ref) < 1e-4


@pytest.mark.slow  # TorchScript freezing, ONNX export, ONNX Runtime and OpenVINO sessions
def test_fused_variants_compute_the_same_function(tmp_path):
    variants, facts = build_fused_variants(TINY, 'cpu', threads=1, use_compile=False,
                                           workdir=tmp_path, size=32)
    assert list(variants)[:3] == [UNFUSED, PARTIAL_EAGER, FULL_EAGER]
    expected = {'full fusion, TorchScript frozen', FULL_ORT}
    if importlib.util.find_spec('openvino'):
        expected.add(FULL_OPENVINO)  # the same fused.onnx as ONNX Runtime's
    assert expected <= set(variants)
    assert facts['bn_fused'] == 0 < facts['bn_partial'] == 7 < facts['bn_unfused']
    assert facts['gmacs_fused'] > 0
    assert set(facts['max_rel_error']) == set(variants)
    assert all(error < 1e-4 for error in facts['max_rel_error'].values())
    assert check_same_outputs(variants) == pytest.approx(facts['max_rel_error'])


def test_output_check_names_the_variant_that_differs():
    x = torch.ones(1, 3)
    variants = {UNFUSED: lambda: (x,), 'broken': lambda: (x * 1.01,)}
    with pytest.raises(RuntimeError, match='broken differs'):
        check_same_outputs(variants)


def test_gemm_counts_its_flops():
    gemm, flop = gemm_callable('cpu')
    out = gemm()
    assert out.shape == (2048, 2048) and flop == 2.0 * 2048 ** 3


def test_floor_of_each_round_scales_with_that_rounds_gemm_time():
    # 1 GMAC = 2 GFLOP; a 4 GFLOP GEMM taking 2 s (2 GFLOP/s) puts the floor at 1 s.
    assert floor_samples(1e9, [2.0, 4.0], 4e9) == [1.0, 2.0]
