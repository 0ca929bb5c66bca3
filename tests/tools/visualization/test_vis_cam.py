"""Grad-CAM on the RepNeXt-M0 shapes classifier: the CLI, the library, both model forms, errors."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from repnext_mm.apis.model import build_model, load_model_config  # noqa: E402
from repnext_mm.models.backbones.repnext import RepNeXt  # noqa: E402
from repnext_mm.visualization import cam as cam_lib  # noqa: E402
from repnext_mm.cli import run_cli
from tests.helpers import REPO, load_tool, randomize_norms, requires_grad_cam, requires_mmcv_ops

CONFIG = REPO / 'configs/mmpretrain/repnext_m0_shapes.py'
IMAGE_HW = (80, 96)  # not square and not the model's 64x64 input: the overlay must keep it


vis_cam = load_tool('tools/visualization/vis_cam.py')


def _draw_image(path: Path, seed: int = 0) -> Path:
    """A shapes-like picture: a noisy background with a filled star and a circle."""
    rng = np.random.default_rng(seed)
    height, width = IMAGE_HW
    image = rng.integers(60, 120, size=(height, width, 3), dtype=np.uint8)
    angles = np.linspace(0, 2 * np.pi, 11)[:-1]
    radii = np.where(np.arange(10) % 2 == 0, 26, 11)
    star = np.stack([60 + radii * np.cos(angles), 40 + radii * np.sin(angles)], 1).astype(np.int32)
    cv2.fillPoly(image, [star], (30, 220, 250))
    cv2.circle(image, (18, 20), 10, (240, 40, 40), thickness=-1)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture(scope='module')
def files(tmp_path_factory) -> dict[str, Path]:
    """The shapes classifier with random weights and non-trivial BN statistics, saved as a
    runner-style checkpoint, and a test image."""
    root = tmp_path_factory.mktemp('vis_cam')
    torch.manual_seed(0)
    model = randomize_norms(build_model(load_model_config(CONFIG)), seed=0)
    checkpoint = root / 'repnext_m0_shapes.pth'
    torch.save(dict(meta=dict(epoch=1), state_dict=model.state_dict()), checkpoint)
    return dict(checkpoint=checkpoint, image=_draw_image(root / 'shapes.png'), root=root)


@pytest.fixture(scope='module')
def visualizer(files) -> cam_lib.CAMVisualizer:
    return cam_lib.CAMVisualizer.from_config(CONFIG, files['checkpoint'])


def _run_cli(files, out: Path, *extra: str) -> np.ndarray:
    code = run_cli(vis_cam.main, [str(CONFIG), str(files['checkpoint']), str(files['image']),
                         '--out', str(out), *extra])
    assert code == 0
    written = cv2.imread(str(out))
    assert written is not None, f'{out} was not written'
    return written


@requires_grad_cam
def test_cli_writes_overlay_of_image_size_and_layers_differ(files, tmp_path, capsys):
    original = cv2.imread(str(files['image']))
    last = _run_cli(files, tmp_path / 'last.png')
    # The overlay has the input image's own size (not the 64x64 model input) ...
    assert last.shape == (*IMAGE_HW, 3)
    # ... is not a constant picture and is not the unchanged image (a heat map was blended in).
    assert last.reshape(-1, 3).std(axis=0).max() > 5
    assert np.abs(last.astype(int) - original.astype(int)).mean() > 5
    output = capsys.readouterr().out
    assert 'gradcam of class' in output and 'backbone.stages.3' in output
    # Nothing but the output is left in the folder (atomic write: no temporary file).
    assert sorted(p.name for p in tmp_path.iterdir()) == ['last.png']

    # A folder of images -> a folder of overlays; here on the third stage, which must differ.
    images = tmp_path / 'images'
    images.mkdir()
    (images / 'a.png').write_bytes(files['image'].read_bytes())
    _draw_image(images / 'b.png', seed=1)
    out = tmp_path / 'maps'
    assert run_cli(vis_cam.main, [str(CONFIG), str(files['checkpoint']), str(images), '--out', str(out),
                         '--target-layers', 'backbone.stages.2']) == 0
    assert sorted(p.name for p in out.iterdir()) == ['a_cam.png', 'b_cam.png']
    third = cv2.imread(str(out / 'a_cam.png'))
    assert third.shape == last.shape
    assert np.abs(third.astype(int) - last.astype(int)).mean() > 2


@requires_grad_cam
def test_maps_differ_between_layers_and_categories(visualizer, files):
    image = cam_lib.load_image(files['image'])
    stage3 = visualizer.compute(image)  # default: the last stage, predicted class
    assert stage3.target_layers == ['backbone.stages.3']
    assert stage3.cam.shape == IMAGE_HW and stage3.cam.dtype == np.float32
    assert 0.0 <= stage3.cam.min() and stage3.cam.max() <= 1.0
    assert stage3.category == int(np.argmax(stage3.probabilities))
    assert stage3.input_size == (64, 64)  # the config's CenterCrop size

    stage2 = visualizer.compute(image, ['stages.2'])  # short form of backbone.stages.2
    assert stage2.target_layers == ['backbone.stages.2']
    assert np.abs(stage2.cam - stage3.cam).max() > 0.1

    maps = [visualizer.compute(image, ['backbone.stages.2'], category=c).cam for c in (0, 1)]
    assert np.abs(maps[0] - maps[1]).max() > 0.05


@requires_grad_cam
def test_fused_model_gives_the_same_map(visualizer, files):
    fused = cam_lib.CAMVisualizer.from_config(CONFIG, files['checkpoint'], fuse=True)
    assert not any('norm' in name for name, _ in fused.model.backbone.named_modules())
    image = cam_lib.load_image(files['image'])
    for layers in (None, ['backbone.stages.2.blocks.8']):
        training = visualizer.compute(image, layers, category=1)
        deployed = fused.compute(image, layers, category=1)
        assert training.target_layers == deployed.target_layers
        assert abs(training.score - deployed.score) < 1e-3 * max(1.0, abs(training.score))
        np.testing.assert_allclose(deployed.cam, training.cam, atol=2e-3)


@requires_grad_cam
def test_bare_backbone_explains_feature_energy_or_channel():
    torch.manual_seed(0)
    # A tiny custom arch: the scores do not depend on the variant, and it keeps the test fast.
    backbone = RepNeXt(dict(widths=(8, 16, 32, 64), depths=(1, 1, 2, 1)), out_indices=(1, 2))
    visualizer = cam_lib.CAMVisualizer(backbone, 'backbone', mean=(0, 0, 0), std=(255, 255, 255))
    image = np.random.default_rng(0).integers(0, 255, size=(40, 70, 3), dtype=np.uint8)
    result = visualizer.compute(image, ['stages.1'])
    assert result.target == 'energy of the deepest backbone output'
    # The energy is positive, so the map is never empty (the plain mean often is).
    assert not result.empty and result.cam.max() > 0.5
    assert result.cam.shape == (40, 70)
    assert result.input_size == (64, 96)  # own aspect ratio, rounded up to multiples of 32
    channel = visualizer.compute(image, ['stages.1'], category=3)
    assert 'channel 3' in channel.target
    assert np.abs(channel.cam - result.cam).max() > 0.05
    mean = visualizer.compute(image, ['stages.1'], feature_score='mean')
    assert mean.target == 'mean of the deepest backbone output'
    assert result.score > 0 and abs(mean.score - result.score) > 1e-3  # energy != plain mean
    with pytest.raises(cam_lib.CAMError, match='feature score'):
        visualizer.compute(image, ['stages.1'], feature_score='max')
    with pytest.raises(cam_lib.CAMError, match='32 channels'):
        visualizer.compute(image, ['stages.1'], category=32)
    # Stage 3 runs but is not among out_indices=(1, 2): the score cannot depend on it.
    with pytest.raises(cam_lib.CAMError, match='does not depend on target layer'):
        visualizer.compute(image, ['stages.3'])


@requires_grad_cam
@requires_mmcv_ops
@pytest.mark.parametrize('config', ['configs/mmdet/mask_rcnn_repnext_m0_fpn_shapes.py',
                                    'configs/mmseg/fpn_repnext_m0_shapes.py'])
def test_detector_and_segmentor_explain_their_backbone(config, files):
    visualizer = cam_lib.CAMVisualizer.from_config(REPO / config, None)
    assert visualizer.task in ('detector', 'segmentor')
    assert any('random weights' in note for note in visualizer.notes)
    result = visualizer.compute(cam_lib.load_image(files['image']), ['backbone.stages.2'])
    assert result.target == 'energy of the deepest backbone output'
    assert result.input_size == (96, 96)  # 80x96 rounded up to multiples of 32
    assert result.cam.shape == IMAGE_HW and not result.empty


@requires_grad_cam
def test_unknown_layer_lists_valid_names(visualizer, files):
    image = cam_lib.load_image(files['image'])
    with pytest.raises(cam_lib.CAMError) as error:
        visualizer.compute(image, ['backbone.stage.3'])
    message = str(error.value)
    assert "'backbone.stage.3'" in message
    assert 'backbone.stages.0 .. backbone.stages.3' in message
    assert 'backbone.stages.2.blocks.0 .. backbone.stages.2.blocks.8' in message
    assert 'Closest names: backbone.stages.3' in message
    with pytest.raises(cam_lib.CAMError, match='not an \\(N, C, H, W\\) feature map'):
        visualizer.compute(image, ['head'])
    with pytest.raises(cam_lib.CAMError, match='4 classes'):
        visualizer.compute(image, category=4)


@requires_grad_cam
def test_cli_errors_are_one_line_with_exit_code_2(files, tmp_path, capsys):
    args = [str(CONFIG), str(files['checkpoint']), str(files['image']), '--out', str(tmp_path / 'x.png')]
    assert run_cli(vis_cam.main, args + ['--target-layers', 'backbone.nope']) == 2
    assert 'error: target layer' in capsys.readouterr().err
    assert run_cli(vis_cam.main, args + ['--method', 'magiccam']) == 2
    assert 'unknown CAM method' in capsys.readouterr().err
    missing = [str(CONFIG), str(files['checkpoint']), str(tmp_path / 'missing.png')]
    assert run_cli(vis_cam.main, missing) == 2
    assert 'missing.png does not exist' in capsys.readouterr().err
    assert run_cli(vis_cam.main, [str(CONFIG), str(tmp_path / 'no.pth'), str(files['image'])]) == 2
    assert 'checkpoint' in capsys.readouterr().err
    assert not (tmp_path / 'x.png').exists()


@requires_grad_cam  # the method is checked first, against grad-cam's classes
def test_out_with_a_non_image_suffix_is_refused_before_anything_runs(files, tmp_path, capsys):
    out = tmp_path / 'x.txt'
    # A missing checkpoint would be reported once the output is accepted: --out is checked first.
    status = run_cli(vis_cam.main, [str(CONFIG), str(tmp_path / 'missing.pth'), str(files['image']),
                           '--out', str(out)])
    assert status == 2
    err = capsys.readouterr().err
    assert err.count('error:') == 1 and "'.txt' is not an image suffix" in err
    assert 'checkpoint' not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(cam_lib.CAMError, match="OpenCV writes no '.txt' images"):
        cam_lib.check_image_output(out)
    with pytest.raises(cam_lib.CAMError, match='no suffix'):
        cam_lib.save_image(np.zeros((4, 4, 3), np.uint8), tmp_path / 'x')
    assert list(tmp_path.iterdir()) == []


@requires_grad_cam
def test_folder_run_skips_and_reports_undecodable_images(files, tmp_path, capsys):
    images = tmp_path / 'images'
    images.mkdir()
    (images / 'a.png').write_bytes(files['image'].read_bytes())
    (images / 'broken.png').write_bytes(b'not a png at all')
    out = tmp_path / 'maps'
    assert run_cli(vis_cam.main, [str(CONFIG), str(files['checkpoint']), str(images), '--out',
                         str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ['a_cam.png']
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith('warning:')]
    assert warnings == [f'warning: skipped {images / "broken.png"}: it cannot be decoded by '
                        'OpenCV (not an image, or a damaged file)',
                        'warning: skipped 1 of 2 images; wrote the other 1']
    assert 'a_cam.png' in captured.out and 'broken' not in captured.out


@requires_grad_cam
def test_folder_run_where_every_image_is_bad_is_an_error(files, tmp_path, capsys):
    images = tmp_path / 'images'
    images.mkdir()
    for name in ('x.png', 'y.jpg'):
        (images / name).write_bytes(b'\x00' * 16)
    out = tmp_path / 'maps'
    assert run_cli(vis_cam.main, [str(CONFIG), str(files['checkpoint']), str(images), '--out',
                         str(out)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'none of the 2 images could be read' in errors[0]
    assert '(and 1 more)' in errors[0] and 'Traceback' not in err
    assert not out.exists()


def test_input_size_helpers():
    assert cam_lib.dense_input_size((480, 640)) == (480, 640)
    assert cam_lib.dense_input_size((3000, 4000)) == (800, 1088)  # scale 800/3000 -> 800x1066.7
    assert cam_lib.dense_input_size((10, 10)) == (32, 32)
    assert cam_lib.dense_input_size((80, 97)) == (96, 128)
    assert cam_lib.classifier_input_size(load_model_config(CONFIG)) == (64, 64)
