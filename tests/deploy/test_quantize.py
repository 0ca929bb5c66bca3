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


# ------------------------- whole models: segmentor, detector scoping -------------------------

@pytest.fixture(scope='module')
def int8_segmentor(trained_checkpoints, shape_images, tmp_path_factory):
    """The shapes segmentor (whole, 64x64) exported once in fp32, then quantized both ways:
    ONNX Runtime QDQ and NNCF's OpenVINO IR, on the same 8 calibration images."""
    from repnext_mm.deploy.nncf_quantize import quantize_openvino_ir
    from repnext_mm.deploy.onnx_export import export_onnx
    from repnext_mm.deploy.quantize import quantize_onnx_file

    prepared = prepare_model(SHAPES_CONFIGS['segmentor'], trained_checkpoints['segmentor'])
    wrapper = ExportWrapper(prepared.fused(), prepared.task)
    root = tmp_path_factory.mktemp('int8_segmentor')
    fp32 = export_onnx(wrapper, (64, 64), root / 'fp32.onnx', wrapper.output_names,
                       preprocessing=preprocessing_of(prepared.cfg), log=lambda _: None)
    reader = PipelineInputs(prepared.cfg, prepared.fused().data_preprocessor, (64, 64))
    calibration = reader.read_folder(shape_images['calib'])
    qdq = quantize_onnx_file(fp32, root / 'int8.onnx', calibration, 'segmentor',
                             log=lambda _: None)
    ir = quantize_openvino_ir(fp32, root / 'int8.xml', calibration, 'segmentor',
                              log=lambda _: None)
    return dict(fp32=fp32, qdq=qdq, ir=ir, calibration=calibration, root=root,
                heldout=reader.read_folder(shape_images['heldout']))


@pytest.mark.slow  # two int8 quantizations of a whole segmentor (~10 s)
def test_int8_segmentor_keeps_the_output_resize_float_and_agrees(int8_segmentor):
    import onnx

    qdq = int8_segmentor['qdq']
    assert qdq.int8_ops['Conv'] > 50 and 'Resize' in qdq.int8_ops  # the FPN head's upsampling
    # The resize of the logits to the input stays float: one Resize among the float ops.
    assert qdq.float_ops.get('Resize') == 1
    assert [len(v) for k, v in qdq.kept_float.items() if k == quantize.TAIL_REASON] == [1]
    fp32_meta = {p.key: p.value for p in onnx.load(str(int8_segmentor['fp32'].path)).metadata_props}
    int8_meta = {p.key: p.value for p in onnx.load(str(qdq.path)).metadata_props}
    assert int8_meta['precision'] == 'int8'
    assert {k: int8_meta[k] for k in fp32_meta} == fp32_meta  # carries the fp32 metadata
    heldout = int8_segmentor['heldout']
    cosines = output_cosines(session_call(int8_segmentor['fp32'].path), session_call(qdq.path),
                             heldout.inputs, ['seg_logits'])
    assert MIN_HELDOUT_COSINE <= min(cosines['seg_logits']) < 0.99999


@pytest.mark.slow  # shares the int8_segmentor fixture
def test_nncf_ir_is_read_by_the_deployed_file_reader_and_runs_on_openvino(int8_segmentor):
    from repnext_mm.deploy.deployed_io import deployed_call, read_metadata
    from repnext_mm.deploy.openvino_ir import ir_weights_path

    ir = int8_segmentor['ir']
    assert ir.path.suffix == '.xml' and ir_weights_path(ir.path).is_file()
    assert ir.int8_ops['FakeQuantize'] > 50 and ir.cosine['seg_logits'] >= MIN_HELDOUT_COSINE
    metadata = read_metadata(ir.path)
    assert metadata['precision'] == 'int8' and metadata['mean'] == '[123.675, 116.28, 103.53]'
    assert metadata['quantizer'].startswith('nncf.quantize')
    x = int8_segmentor['heldout'].inputs[0].numpy()
    outputs = deployed_call(ir.path, 'openvino', threads=1)(x)
    expected = session_call(int8_segmentor['fp32'].path)(x)[0]
    assert outputs['seg_logits'].shape == expected.shape
    assert quantize.cosine_similarity(outputs['seg_logits'], expected) >= MIN_HELDOUT_COSINE
    with pytest.raises(InputError, match='is an OpenVINO IR: run it with --backend openvino'):
        deployed_call(ir.path, 'onnxruntime')


@pytest.mark.slow  # an NNCF quantization that must be refused
def test_a_drifting_nncf_ir_writes_nothing(int8_segmentor, tmp_path, monkeypatch):
    from repnext_mm.deploy.nncf_quantize import quantize_openvino_ir

    monkeypatch.setattr(quantize, 'MIN_COSINE', 1.01)  # no int8 model can pass
    with pytest.raises(InputError, match='does not reproduce the fp32 one.*nothing was written'):
        quantize_openvino_ir(int8_segmentor['fp32'], tmp_path / 'int8.xml',
                             int8_segmentor['calibration'], 'segmentor', log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_detection_agreement_matches_by_label_and_iou():
    reference = dict(boxes=np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
                     scores=np.array([0.9, 0.8]), labels=np.array([0, 1]))
    same = quantize.detection_agreement(reference, reference)
    assert same['matched'] == 2 and same['agreement'] == 1.0 and same['worst_iou'] == 1.0
    shifted = dict(boxes=np.array([[1, 0, 11, 10], [20, 20, 30, 30]], np.float32),
                   scores=np.array([0.7, 0.8]), labels=np.array([0, 2]))  # 2nd: other label
    found = quantize.detection_agreement(reference, shifted)
    assert found['matched'] == 1 and found['agreement'] == 0.5
    assert found['worst_iou'] == pytest.approx(90 / 110) and found['max_score_difference'] == \
        pytest.approx(0.2)
    empty = dict(boxes=np.zeros((0, 4)), scores=np.zeros(0), labels=np.zeros(0, int))
    assert quantize.detection_agreement(empty, empty)['agreement'] == 1.0
    assert quantize.detection_agreement(reference, empty)['agreement'] == 0.0
    with pytest.raises(InputError, match='detections agree with fp32 at 0.400 < 0.5'):
        quantize.refuse_drift({'feature': 0.999}, dict(agreement=0.4))


class _Detectorish(nn.Module):
    """backbone -> neck -> head, with an argmax-like post-processing: module scoping's test."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.neck = nn.Conv2d(4, 4, 1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        features = self.neck(self.backbone(x))
        return self.head(features).flatten(1).topk(3).values


def test_a_detector_quantizes_only_its_modules_and_compares_their_features(tmp_path):
    import onnx

    torch.onnx.export(_Detectorish().eval(), (torch.randn(1, 3, 8, 8),), str(tmp_path / 'd.onnx'),
                      opset_version=17, dynamo=False, output_names=['scores'])
    model = onnx.load(str(tmp_path / 'd.onnx'))
    plan = quantize.plan_quantization(model, 'detector')
    ops = {node.name: node.op_type for node in model.graph.node}
    assert sorted(ops[name] for name in plan.nodes_to_quantize) == ['Conv', 'Conv', 'Relu']
    floating = plan.kept_float[quantize.SCOPE_REASON.format(modules='backbone, neck')]
    assert {ops[name] for name in floating} >= {'Conv', 'TopK'}  # the head and its top-k
    # The neck's output is what leaves the quantized modules.
    neck_conv = next(n for n in model.graph.node if n.name.startswith('/neck/'))
    assert plan.features == list(neck_conv.output)
    with pytest.raises(InputError, match='no node of the graph belongs to the modules rpn'):
        quantize.plan_quantization(model, 'detector', modules=('rpn',))


class _GroupNormNeck(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3, padding=1)
        self.neck = nn.Sequential(nn.Conv2d(4, 4, 1), nn.GroupNorm(2, 4))

    def forward(self, x):
        return self.neck(self.backbone(x))


def test_group_norm_stays_float_inside_the_quantized_modules(tmp_path):
    import onnx

    torch.onnx.export(_GroupNormNeck().eval(), (torch.randn(1, 3, 8, 8),), str(tmp_path / 'g.onnx'),
                      opset_version=17, dynamo=False, output_names=['features'])
    model = onnx.load(str(tmp_path / 'g.onnx'))
    plan = quantize.plan_quantization(model, 'detector')
    ops = {node.name: node.op_type for node in model.graph.node}
    group_norm = plan.kept_float[quantize.GROUP_NORM_REASON]
    assert 'InstanceNormalization' in {ops[name] for name in group_norm}
    assert not set(group_norm) & set(plan.nodes_to_quantize)
    assert sorted(ops[name] for name in plan.nodes_to_quantize) == ['Conv', 'Conv']
