"""The whole two-stage detector as one graph: mmdet's predictions, in torch and on both runtimes."""
import numpy as np
import pytest
import torch

from repnext_mm.apis.model import prepare_model
from repnext_mm.deploy.deployed_io import DETECTOR_OUTPUTS, deployed_call, detections_to_instances
from repnext_mm.deploy.detector_graph import DetectorGraph, detector_input_shape
from repnext_mm.deploy.exportable import ExportWrapper
from repnext_mm.deploy.onnx_export import export_onnx
from repnext_mm.deploy.verify import detection_samples
from repnext_mm.utils.errors import InputError
from tests.helpers import SHAPES_CONFIGS, SHAPES_INPUT_SIZES

SHAPE = SHAPES_INPUT_SIZES['detector']


@pytest.fixture(scope='module')
def detector():
    torch.manual_seed(0)
    prepared = prepare_model(SHAPES_CONFIGS['detector'])
    return prepared.fused().eval(), prepared.cfg


def _image(seed=0):
    return torch.randn(1, 3, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _mmdet_predictions(model, image):
    samples = detection_samples(image)
    with torch.no_grad():
        return model.predict(image, samples, rescale=True)[0].pred_instances, samples[0].metainfo


def test_graph_gives_mmdets_detections(detector):
    model, _ = detector
    graph = DetectorGraph(model).eval()
    image = _image()
    reference, meta = _mmdet_predictions(model, image)
    with torch.no_grad():
        outputs = dict(zip(graph.output_names, (o.numpy() for o in graph(image))))
    assert graph.output_names == list(DETECTOR_OUTPUTS)
    found = detections_to_instances(outputs, meta, 0.5)
    assert len(reference) > 0 and len(found) == len(reference)
    torch.testing.assert_close(found.bboxes, reference.bboxes, atol=1e-4, rtol=0)
    torch.testing.assert_close(found.scores, reference.scores, atol=1e-5, rtol=0)
    assert torch.equal(found.labels, reference.labels)
    assert torch.equal(found.masks, reference.masks.bool())


@pytest.fixture(scope='module')
def exported(detector, tmp_path_factory):
    model, _ = detector
    wrapper = ExportWrapper(model, 'detector').eval()
    path = tmp_path_factory.mktemp('detector') / 'det.onnx'
    export_onnx(wrapper, SHAPE, path, wrapper.output_names, check_parity=False)
    return wrapper, path


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_onnx_file_runs_unchanged_on_both_runtimes(exported, backend):
    wrapper, path = exported
    image = _image(1)
    with torch.no_grad():
        expected = dict(zip(wrapper.output_names, (o.numpy() for o in wrapper(image))))
    actual = deployed_call(path, backend, threads=1)(image.numpy())
    assert list(actual) == list(DETECTOR_OUTPUTS)
    assert len(expected['boxes']) > 0
    for name in DETECTOR_OUTPUTS:
        assert actual[name].shape == expected[name].shape, name
    np.testing.assert_allclose(actual['boxes'], expected['boxes'], atol=1e-3)
    np.testing.assert_allclose(actual['scores'], expected['scores'], atol=1e-4)
    np.testing.assert_array_equal(actual['labels'], expected['labels'])
    np.testing.assert_allclose(actual['masks'], expected['masks'], atol=1e-4)


def test_no_detection_gives_empty_outputs(detector, tmp_path):
    model, _ = detector
    model.test_cfg.rcnn.score_thr = 1.0  # softmax scores never exceed it
    try:
        wrapper = ExportWrapper(model, 'detector').eval()
        path = export_onnx(wrapper, SHAPE, tmp_path / 'empty.onnx', wrapper.output_names,
                           check_parity=False).path
    finally:
        model.test_cfg.rcnn.score_thr = 0.05
    for backend in ('onnxruntime', 'openvino'):
        outputs = deployed_call(path, backend, threads=1)(_image().numpy())
        assert outputs['boxes'].shape == (0, 4) and outputs['masks'].shape[0] == 0, backend
        assert outputs['scores'].shape == (0,) and outputs['labels'].shape == (0,)


def test_a_detector_without_rpn_points_to_backbone_only():
    with pytest.raises(InputError, match='two-stage.*--backbone-only'):
        DetectorGraph(torch.nn.Module())


def test_default_input_shape_is_the_padded_test_scale(detector):
    _, cfg = detector
    assert detector_input_shape(cfg) == SHAPE
    cfg = dict(test_dataloader=dict(dataset=dict(pipeline=[
        dict(type='Resize', scale=(1333, 800), keep_ratio=True)])),
        model=dict(data_preprocessor=dict(pad_size_divisor=32)))
    assert detector_input_shape(cfg) == (800, 1344)
