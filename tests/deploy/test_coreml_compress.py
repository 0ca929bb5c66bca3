"""Core ML weight compression (``--coreml-compress``): a smaller package whose weights, as
coremltools decompresses them, are close to the original ones - what Linux can check (running
the package needs macOS).

One M0 backbone (four stages, 64x64) is converted per compression: about 15 s each.
"""
from __future__ import annotations

import numpy as np
import pytest

from repnext_mm.apis.model import prepare_model, preprocessing_of
from repnext_mm.deploy.coreml import export_coreml, mil_weights, package_bytes
from repnext_mm.deploy.exportable import ExportWrapper
from repnext_mm.utils.errors import InputError
from tests.helpers import SHAPES_CONFIGS


@pytest.fixture(scope='module')
def backbone(trained_checkpoints):
    prepared = prepare_model(SHAPES_CONFIGS['segmentor'], trained_checkpoints['segmentor'])
    return prepared, ExportWrapper(prepared.fused(), prepared.task, backbone_only=True)


@pytest.fixture(scope='module')
def compressed(backbone, tmp_path_factory):
    """``{compression: CoreMLExport}``, converted lazily."""
    prepared, wrapper = backbone
    root = tmp_path_factory.mktemp('coreml_compress')

    class Lazy(dict):
        def __missing__(self, kind: str):
            self[kind] = export_coreml(wrapper, (64, 64), root / f'{kind}.mlpackage',
                                       preprocessing_of(prepared.cfg), compression=kind,
                                       log=lambda _: None)
            return self[kind]
    return Lazy()


@pytest.mark.slow  # Core ML conversions (the compressed fixture)
def test_int8_weights_halve_the_package_and_decompress_close_to_fp16(compressed, backbone):
    import coremltools as ct

    result = compressed['int8']
    info = result.report['compression']
    sizes = info['package_bytes']
    # fp16 -> int8 for 99 % of the parameters: about half, plus per-channel scales.
    assert sizes['after'] < 0.6 * sizes['before']
    assert package_bytes(result.path) == sizes['after']  # the written package is the small one
    written = mil_weights(ct.models.MLModel(str(result.path), skip_model_load=True))
    assert sum(name.endswith('_quantized') for name in written) == info['compressed_weights'] > 0
    assert info['compressed_fraction_of_parameters'] > 0.9
    # Every torch parameter was matched to its Core ML constant (else the replay compares
    # the torch model with itself).
    _, wrapper = backbone
    assert info['torch_replay']['parameters_replaced'] == len(list(wrapper.parameters()))
    # Symmetric int8 per output channel: each weight is off by at most half a step,
    # max|w_c| / 254. Measured relative error (per tensor): max 0.0066 on this model (0.026 on
    # the trained shapes classifier, docs/quantization.md).
    assert 0 < info['weight_relative_error']['max'] < 0.02
    replay = info['torch_replay']
    for name in ('stage0', 'stage1', 'stage2', 'stage3'):
        # fp16 weights alone: measured <= 4.3e-4.
        assert replay['uncompressed_weights'][name]['relative_error'] < 2e-3
        compressed_agreement = replay['compressed_weights'][name]
        assert compressed_agreement['cosine'] >= 0.999, replay  # measured >= 0.99997
        assert compressed_agreement['relative_error'] > replay['uncompressed_weights'][name][
            'relative_error']


@pytest.mark.slow  # the compressed fixture
def test_palettization_trades_accuracy_for_size(compressed):
    int8, lut4 = (compressed[kind].report['compression'] for kind in ('int8', 'palettize4'))
    assert lut4['package_bytes']['after'] < int8['package_bytes']['after']
    # Measured mean relative weight error: 0.098 (4-bit lookup table) vs 0.0048 (int8).
    assert lut4['weight_relative_error']['mean'] > 5 * int8['weight_relative_error']['mean']
    # 16 values per tensor: every compressed weight takes at most 16 distinct values.
    import coremltools as ct

    weights = mil_weights(ct.models.MLModel(str(compressed['palettize4'].path),
                                            skip_model_load=True))
    palettized = [value for name, value in weights.items() if name.endswith('_palettized')]
    assert len(palettized) == lut4['compressed_weights']
    assert max(len(np.unique(value)) for value in palettized) <= 16


def test_unknown_compression_is_refused_before_conversion(backbone, tmp_path):
    prepared, wrapper = backbone
    with pytest.raises(InputError, match="--coreml-compress must be one of none, int8, "
                                         "palettize8, palettize6, palettize4, got 'int4'"):
        export_coreml(wrapper, (64, 64), tmp_path / 'm.mlpackage', preprocessing_of(prepared.cfg),
                      compression='int4')
    assert list(tmp_path.iterdir()) == []
