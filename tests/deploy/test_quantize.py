"""int8 post-training quantization: calibration images through the config's test pipeline, the
QDQ export and its agreement with fp32, and outputs that are whole or absent.

The model is the shapes M0 backbone (all four stages) at 64x64, calibrated on 8 generated images
and compared on 8 others: a few seconds.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from repnext_mm.apis.model import load_model_config, prepare_model, preprocessing_of
from repnext_mm.deploy import quantize
from repnext_mm.deploy.calibration import (PipelineInputs, calibration_dir, inference_pipeline,
                                           list_images)
from repnext_mm.deploy.exportable import ExportWrapper
from repnext_mm.deploy.quantize import (export_int8_onnx, gelu_nodes, op_precisions,
                                        output_cosines)
from repnext_mm.deploy.onnx_runtime import onnxruntime_call as session_call
from repnext_mm.utils.errors import InputError
from tests.helpers import SHAPES_CONFIGS

#: Lowest cosine similarity int8 vs fp32 accepted per stage on held-out images. Measured on
#: this model (shapes M0 at 64x64, random BN statistics, seed 0): 0.9998 / 0.9995 / 0.9988 /
#: 0.9985 for stages 0-3, so 0.99 leaves 7x the measured error as margin.
MIN_HELDOUT_COSINE = 0.99


@pytest.fixture(scope='module')
def backbone(trained_checkpoints):
    """The segmentor's M0 backbone (four stage outputs), fused, with its config and reader."""
    prepared = prepare_model(SHAPES_CONFIGS['segmentor'], trained_checkpoints['segmentor'])
    wrapper = ExportWrapper(prepared.fused(), prepared.task, backbone_only=True)
    reader = PipelineInputs(prepared.cfg, prepared.fused().data_preprocessor, (64, 64))
    return prepared, wrapper, reader


@pytest.fixture(scope='module')
def int8_backbone(backbone, shape_images, tmp_path_factory):
    prepared, wrapper, reader = backbone
    root = tmp_path_factory.mktemp('int8')
    result = export_int8_onnx(wrapper, (64, 64), root / 'int8.onnx', wrapper.output_names,
                              reader.read_folder(shape_images['calib']),
                              preprocessing=preprocessing_of(prepared.cfg),
                              fp32_out=root / 'fp32.onnx', log=lambda _: None)
    return result, root


def test_calibration_folders_come_from_the_configs_dataloaders():
    folders = {task: calibration_dir(load_model_config(config)).as_posix()
               for task, config in SHAPES_CONFIGS.items()}
    assert folders == dict(classifier='data/shapes/imagenet/val', detector='data/shapes/coco/val',
                           segmentor='data/shapes/ade/images/validation')
    train = calibration_dir(load_model_config(SHAPES_CONFIGS['classifier']), 'train')
    assert train.as_posix() == 'data/shapes/imagenet/train'


def test_the_test_pipeline_is_used_without_annotation_loaders():
    cfg = load_model_config(SHAPES_CONFIGS['segmentor'])
    steps = [step['type'] for step in inference_pipeline(cfg)]
    assert steps == ['LoadImageFromFile', 'Resize', 'PackSegInputs']


def test_images_are_sampled_evenly_over_class_folders(shape_images):
    picked = list_images(shape_images['calib'], count=4)
    assert sorted(p.parent.name for p in picked) == ['circle', 'square', 'star', 'triangle']
    assert len(list_images(shape_images['calib'])) == 8


def test_pipeline_inputs_are_the_models_own_preprocessing(shape_images):
    """Test pipeline + data preprocessor == BGR->RGB and (x - mean) / std on a 64x64 image."""
    prepared = prepare_model(SHAPES_CONFIGS['classifier'])
    path = list_images(shape_images['calib'])[0]
    pre = preprocessing_of(prepared.cfg)
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float32)
    expected = (rgb - np.array(pre.mean, np.float32)) / np.array(pre.std, np.float32)
    reader = PipelineInputs(prepared.cfg, prepared.fused().data_preprocessor, (64, 64))
    actual, size = reader(path)
    assert size == (64, 64) and actual.shape == (1, 3, 64, 64)
    np.testing.assert_allclose(actual[0].permute(1, 2, 0).numpy(), expected, atol=1e-4)
    # Another export size: the normalized image is resized, and the image set says so.
    images = PipelineInputs(prepared.cfg, prepared.fused().data_preprocessor, (96, 96)).read(
        [path], shape_images['calib'])
    assert images.inputs[0].shape == (1, 3, 96, 96) and images.pipeline_size == (64, 64)
    assert 'resized to the export size' in images.describe()


@pytest.mark.slow  # int8 export and calibration (the int8_backbone fixture)
def test_int8_backbone_quantizes_every_conv_and_agrees_with_fp32(int8_backbone, backbone,
                                                                 shape_images):
    result, root = int8_backbone
    _, wrapper, reader = backbone
    import onnx

    fp32, int8 = onnx.load(str(root / 'fp32.onnx')), onnx.load(str(result.path))
    onnx.checker.check_model(int8)
    convs = sum(node.op_type == 'Conv' for node in fp32.graph.node)
    assert result.int8_ops['Conv'] == convs > 50
    # Only the exact GELUs stay float: five ops each (stem, every channel mixer).
    gelus = sum(isinstance(m, nn.GELU) for m in wrapper.modules())
    assert result.float_ops == {'Mul': 2 * gelus, 'Div': gelus, 'Erf': gelus, 'Add': gelus}
    assert [len(nodes) for nodes in result.kept_float.values()] == [5 * gelus]
    assert (result.int8_ops, result.float_ops) == op_precisions(int8)
    assert all(MIN_HELDOUT_COSINE <= result.cosine_min[name] <= result.cosine[name] < 1
               for name in wrapper.output_names)  # the calibration images' own agreement
    metadata = {p.key: p.value for p in int8.metadata_props}
    assert metadata['mean'] == '[123.675, 116.28, 103.53]'
    assert metadata['precision'].startswith('int8')
    # Held-out images (not the calibration ones), through a fresh pair of sessions.
    heldout = reader.read_folder(shape_images['heldout'])
    cosines = output_cosines(session_call(root / 'fp32.onnx'), session_call(result.path),
                             heldout.inputs, wrapper.output_names)
    assert list(cosines) == ['stage0', 'stage1', 'stage2', 'stage3']
    worst = min(min(values) for values in cosines.values())
    assert worst >= MIN_HELDOUT_COSINE, cosines
    assert worst < 0.99999, 'int8 outputs equal to fp32: nothing was quantized'
    # The fp32 graph itself still reproduces torch.
    x = heldout.inputs[0]
    with torch.no_grad():
        expected = wrapper(x)
    for a, e in zip(session_call(root / 'fp32.onnx')(x.numpy()), expected):
        np.testing.assert_allclose(a, e.numpy(), rtol=1e-3, atol=1e-4)


@pytest.mark.slow  # an int8 export with calibration
def test_a_failed_int8_check_writes_nothing(backbone, shape_images, tmp_path, monkeypatch):
    prepared, wrapper, reader = backbone
    monkeypatch.setattr(quantize, 'MIN_COSINE', 1.01)  # no int8 model can pass
    with pytest.raises(InputError, match='does not reproduce the fp32 one.*nothing was written'):
        export_int8_onnx(wrapper, (64, 64), tmp_path / 'int8.onnx', wrapper.output_names,
                         reader.read_folder(shape_images['calib'], count=2), log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_unknown_calibration_method_is_refused_before_any_work(backbone, tmp_path):
    _, wrapper, _ = backbone
    with pytest.raises(InputError, match="--calib-method must be one of minmax, percentile, "
                                         "got 'entropy'"):
        export_int8_onnx(wrapper, (64, 64), tmp_path / 'int8.onnx', wrapper.output_names,
                         calibration=None, method='entropy')
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('approximate, found', [('none', 5), ('tanh', 0)])
def test_gelu_nodes_are_the_exact_gelu_subgraph(tmp_path, approximate, found):
    import onnx

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GELU(approximate=approximate), nn.Conv2d(4, 4, 1))
    torch.onnx.export(model.eval(), (torch.randn(1, 3, 8, 8),), str(tmp_path / 'g.onnx'),
                      opset_version=17, dynamo=False)
    names = gelu_nodes(onnx.load(str(tmp_path / 'g.onnx')))
    assert len(names) == found
    if found:
        ops = {n.name: n.op_type for n in onnx.load(str(tmp_path / 'g.onnx')).graph.node}
        assert sorted(ops[name] for name in names) == ['Add', 'Div', 'Erf', 'Mul', 'Mul']
