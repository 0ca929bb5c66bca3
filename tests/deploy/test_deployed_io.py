"""The deployed-file interface: metadata round trip, padding, mask pasting as mmdet pastes."""
import numpy as np
import pytest
import torch

from repnext_mm.deploy import deployed_io
from repnext_mm.deploy.deployed_io import (DETECTOR_OUTPUTS, config_classes, config_num_classes,
                                           config_task, deployed_metadata,
                                           detections_to_instances, detector_test_settings,
                                           pad_to_shape, paste_masks, read_deployed_info)
from repnext_mm.utils.errors import InputError
from tests.helpers import (SHAPES_CONFIGS, requires_onnxruntime, requires_openvino,
                           write_onnx_graph)


DETECTOR_METADATA = dict(
    task='detector', input_shape=(128, 96), num_classes=4,
    classes=('circle', 'square', 'star', 'triangle'),
    config='configs/mmdet/mask_rcnn_repnext_m0_fpn_shapes.py', outputs=DETECTOR_OUTPUTS,
    mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), color_layout='RGB',
    score_thr=0.05, mask_thr_binary=0.5, max_per_img=20)


def test_metadata_is_strings_json_where_not_plain_and_reads_back(tmp_path):
    metadata = deployed_metadata(**DETECTOR_METADATA)
    assert all(isinstance(v, str) for v in metadata.values())
    assert metadata['task'] == 'detector' and metadata['config'] == \
        'mask_rcnn_repnext_m0_fpn_shapes.py'
    assert metadata['input_shape'] == '[128, 96]' and metadata['num_classes'] == '4'
    assert metadata['outputs'] == '["boxes", "scores", "labels", "masks"]'
    info = read_deployed_info(write_onnx_graph(tmp_path / 'det.onnx', metadata))
    assert (info.task, info.input_shape, info.num_classes) == ('detector', (128, 96), 4)
    assert info.classes == DETECTOR_METADATA['classes']
    assert info.outputs == DETECTOR_OUTPUTS and info.mean == DETECTOR_METADATA['mean']
    assert (info.score_thr, info.mask_thr_binary, info.max_per_img) == (0.05, 0.5, 20)
    assert info.color_layout == 'RGB'


def test_metadata_leaves_out_what_a_model_lacks():
    metadata = deployed_metadata('backbone', (64, 64), None, None, 'x.py', ['stage0'])
    assert 'num_classes' not in metadata and 'classes' not in metadata
    with pytest.raises(ValueError, match='records'):  # a detector without its thresholds
        deployed_metadata('detector', (64, 64), 4, None, 'x.py', DETECTOR_OUTPUTS)
    with pytest.raises(ValueError, match='unknown metadata'):
        deployed_metadata('classifier', (64, 64), 4, None, 'x.py', ['logits'], colour='RGB')


@pytest.mark.parametrize('content, message', [
    (None, 'no deployment metadata'),           # an ONNX file of another tool
    (b'not a protobuf at all' * 5, 'not a readable ONNX file'),
    ('truncated', 'not a readable ONNX file')])
def test_a_file_without_metadata_or_not_onnx_is_one_error_naming_the_fix(tmp_path, content,
                                                                           message):
    path = write_onnx_graph(tmp_path / 'model.onnx')
    if content == 'truncated':
        path.write_bytes(path.read_bytes()[:40])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as error:
        read_deployed_info(path)
    assert 'tools/deploy/export.py' in str(error.value) and '\n' not in str(error.value)


def test_a_missing_file_or_another_suffix_is_one_error(tmp_path):
    with pytest.raises(InputError, match='does not exist'):
        read_deployed_info(tmp_path / 'missing.onnx')
    (tmp_path / 'model.pth').write_bytes(b'x')
    with pytest.raises(InputError, match='must end with .onnx'):
        read_deployed_info(tmp_path / 'model.pth')


def test_pad_to_shape_pads_zeros_bottom_right_and_refuses_a_larger_input():
    inputs = torch.randn(2, 3, 5, 7)
    padded = pad_to_shape(inputs, (8, 9))
    assert padded.shape == (2, 3, 8, 9)
    assert torch.equal(padded[..., :5, :7], inputs)
    assert padded[..., 5:, :].abs().sum() == 0 and padded[..., 7:].abs().sum() == 0
    assert pad_to_shape(inputs, (5, 7)) is inputs
    with pytest.raises(InputError, match=r'5x7 input but the file takes 4x9.*--shape'):
        pad_to_shape(inputs, (4, 9))


def _mmdet_pasted(logits, boxes, labels, img_meta, threshold):
    """What mmdet's FCNMaskHead itself returns for these masks and (input-frame) boxes."""
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead
    from mmengine.config import ConfigDict
    from mmengine.structures import InstanceData

    from mmengine.registry import DefaultScope

    # The head builds its loss from the current scope's registry: mmdet's, whatever ran before.
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = FCNMaskHead(num_convs=0, num_classes=logits.shape[1], in_channels=8)
    results = InstanceData(bboxes=boxes.clone(), labels=labels, scores=torch.ones(len(boxes)))
    (result,) = head.predict_by_feat((logits,), [results], [img_meta],
                                     ConfigDict(mask_thr_binary=threshold), rescale=True)
    return result


@pytest.mark.parametrize('threshold', [0.5, 0.3])
def test_paste_masks_gives_what_mmdets_mask_head_gives(threshold):
    generator = torch.Generator().manual_seed(0)
    count, classes = 6, 3
    logits = torch.randn(count, classes, 28, 28, generator=generator) * 3
    corners = torch.rand(count, 2, generator=generator) * torch.tensor([60.0, 40.0])
    sizes = 4 + torch.rand(count, 2, generator=generator) * 50
    boxes = torch.cat([corners, corners + sizes], dim=1)
    boxes[0] = torch.tensor([-5.0, -3.0, 20.0, 90.0])  # partly outside the image
    labels = torch.randint(0, classes, (count,), generator=generator)
    img_meta = dict(ori_shape=(45, 70), img_shape=(90, 140), scale_factor=(2.0, 2.0))
    expected = _mmdet_pasted(logits, boxes, labels, img_meta, threshold).masks.numpy()

    probabilities = logits.sigmoid()[torch.arange(count), labels].numpy()
    pasted = paste_masks(probabilities, (boxes / 2.0).numpy(), (45, 70), threshold)
    assert pasted.dtype == bool and pasted.shape == (count, 45, 70)
    assert pasted.any() and np.array_equal(pasted, expected)


def test_detections_to_instances_scales_clips_and_pastes_as_mmdet():
    boxes = np.array([[10.0, 20.0, 50.0, 60.0], [-4.0, 90.0, 130.0, 140.0]], np.float32)
    masks = np.full((2, 28, 28), 0.9, np.float32)
    outputs = dict(boxes=boxes, scores=np.array([0.9, 0.4], np.float32),
                   labels=np.array([2, 0]), masks=masks)
    # A 100x150 image resized by 1.2 to 120x180 and padded to 128x192.
    meta = dict(img_shape=(120, 180), ori_shape=(100, 150), scale_factor=(1.2, 1.2))
    instances = detections_to_instances(outputs, meta, mask_thr=0.5)
    # clipped to the resized image (the padding holds no image), then to the original frame
    expected = np.array([[10, 20, 50, 60], [0, 90, 130, 120]], np.float32) / 1.2
    np.testing.assert_allclose(instances.bboxes.numpy(), expected, rtol=1e-6)
    assert instances.labels.dtype == torch.int64 and instances.labels.tolist() == [2, 0]
    assert instances.masks.shape == (2, 100, 150) and instances.masks.dtype == torch.bool
    # a constant-0.9 mask fills its box: the first box's pixels, and nothing outside it
    first = instances.masks[0]
    assert first[20, 10] and first[45, 38] and not first[:15].any() and not first[:, 45:].any()
    logits = torch.full((2, 3, 28, 28), float(np.log(9.0)))  # sigmoid = 0.9
    reference = _mmdet_pasted(logits, torch.from_numpy(np.array(expected) * 1.2),
                              torch.tensor([2, 0]), meta, 0.5)
    assert torch.equal(instances.masks, reference.masks)


def test_no_detection_gives_empty_instances_at_the_image_size():
    outputs = dict(boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
                   labels=np.zeros(0, np.int64), masks=np.zeros((0, 28, 28), np.float32))
    meta = dict(img_shape=(128, 128), ori_shape=(64, 64), scale_factor=(2.0, 2.0))
    instances = detections_to_instances(outputs, meta, 0.5)
    assert len(instances) == 0
    assert instances.bboxes.shape == (0, 4) and instances.masks.shape == (0, 64, 64)


def test_what_the_shapes_configs_say():
    from repnext_mm.apis.config import load_config

    det, seg, cls = (load_config(str(SHAPES_CONFIGS[task]))
                     for task in ('detector', 'segmentor', 'classifier'))
    assert [config_task(c) for c in (det, seg, cls)] == ['detector', 'segmentor', 'classifier']
    assert [config_num_classes(c) for c in (det, seg, cls)] == [4, 4, 4]
    assert config_classes(det) == ['circle', 'square', 'star', 'triangle']
    assert detector_test_settings(det) == dict(score_thr=0.05, mask_thr_binary=0.5,
                                               max_per_img=20)


def test_config_classes_falls_back_to_the_dataset_class():
    from repnext_mm.apis.config import load_config

    cfg = load_config('configs/mmdet/mask_rcnn_repnext_m0_fpn_1x_coco.py')
    classes = config_classes(cfg)
    assert len(classes) == 80 and classes[0] == 'person'


@requires_onnxruntime
@pytest.mark.parametrize('backend', [
    'onnxruntime', pytest.param('openvino', marks=requires_openvino)])
def test_deployed_call_returns_outputs_by_name(tmp_path, backend):
    from onnx import TensorProto

    path = write_onnx_graph(tmp_path / 'two.onnx', outputs=dict(
        b=(TensorProto.FLOAT, [0, 4]), a=(TensorProto.INT64, [2])))
    feed = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    outputs = deployed_io.deployed_call(path, backend, threads=1)(feed)
    assert list(outputs) == ['b', 'a']  # the graph's order, by name
    assert outputs['b'].shape == (0, 4) and outputs['a'].dtype == np.int64
    with pytest.raises(InputError, match='--backend must be one of'):
        deployed_io.deployed_call(path, 'tensorrt')
