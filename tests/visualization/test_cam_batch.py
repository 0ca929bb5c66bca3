"""Grad-CAM over files and folders: image collection, output path rules, the per-image loop.

No model is built here (a stub stands in for the visualizer); the real model runs through the
command line tool in tests/tools/visualization/test_vis_cam.py.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from repnext_mm.visualization.cam import CAMError, CAMResult, UnreadableImageError  # noqa: E402
from repnext_mm.visualization.cam_batch import (CAMRunSettings, check_settings,  # noqa: E402
                                                checkpoint_path, collect_images,
                                                compute_overlays, describe, output_paths,
                                                report_batch)
from tests.helpers import requires_grad_cam


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'')
    return path


def _result(cam: np.ndarray, probabilities: np.ndarray | None = None,
            category: int | None = None, empty: bool = False) -> CAMResult:
    return CAMResult(cam=cam, empty=empty, target_layers=['backbone.stages.3'], method='gradcam',
                     target='class 2' if probabilities is not None else 'energy of the deepest '
                     'backbone output', category=category, score=1.23456, input_size=(64, 96),
                     probabilities=probabilities)


class StubVisualizer:
    """Returns a horizontal ramp as the map of every image; records the options it got."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def compute(self, image, target_layers, method, category, **options) -> CAMResult:
        self.calls.append(dict(target_layers=target_layers, method=method, category=category,
                               **options))
        height, width = image.shape[:2]
        return _result(np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1)))


def test_collect_images_keeps_order_and_sorts_folders_non_recursively(tmp_path):
    direct = _touch(tmp_path / 'z.anything')  # named directly: kept whatever its suffix
    folder = tmp_path / 'folder'
    for name in ('b.png', 'a.JPG', 'notes.txt', 'sub/c.png'):
        _touch(folder / name)
    assert collect_images([direct, str(folder)]) == [direct, folder / 'a.JPG', folder / 'b.png']


def test_collect_images_refuses_missing_paths_and_folders_without_images(tmp_path):
    _touch(tmp_path / 'only' / 'readme.txt')
    with pytest.raises(CAMError, match='holds no image'):
        collect_images([tmp_path / 'only'])
    with pytest.raises(CAMError, match='missing.png does not exist; pass image files or folders'):
        collect_images([tmp_path / 'missing.png'])


def test_output_paths_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = Path('in/a.jpg'), Path('in/b.png')
    assert output_paths([a], None) == [Path('a_cam.png')]  # one image: here
    assert output_paths([a, b], None) == [Path('vis_cam/a_cam.png'), Path('vis_cam/b_cam.png')]
    assert list(tmp_path.iterdir()) == []  # paths only: nothing is created


@pytest.mark.parametrize('form', ['existing', 'trailing slash', 'no suffix'])
def test_output_paths_folder_forms(tmp_path, form):
    folder = tmp_path / 'maps'
    out = {'existing': str(folder), 'trailing slash': f'{folder}/', 'no suffix': str(folder)}[form]
    if form == 'existing':
        folder.mkdir()
    images = [Path('x/a.png'), Path('x/b.jpg')]
    assert output_paths(images, out) == [folder / 'a_cam.png', folder / 'b_cam.png']
    assert folder.exists() == (form == 'existing')


def test_output_paths_one_image_file(tmp_path):
    out = tmp_path / 'overlay.JPG'
    assert output_paths([Path('a.png')], str(out)) == [out]
    with pytest.raises(CAMError, match="'.txt' is not an image suffix"):
        output_paths([Path('a.png')], str(tmp_path / 'x.txt'))
    with pytest.raises(CAMError, match='one image file but 2 images were given'):
        output_paths([Path('a.png'), Path('b.png')], str(out))
    with pytest.raises(CAMError, match='does not exist; create it'):
        output_paths([Path('a.png')], str(tmp_path / 'missing' / 'x.png'))
    assert list(tmp_path.iterdir()) == []


def test_output_paths_refuses_a_file_as_folder_and_clashing_names(tmp_path):
    _touch(tmp_path / 'maps')  # no suffix, so a folder name - but it is a file
    with pytest.raises(CAMError, match='exists and is not a folder'):
        output_paths([Path('a.png')], str(tmp_path / 'maps'))
    with pytest.raises(CAMError, match='share a file name'):
        output_paths([Path('x/img.png'), Path('y/img.jpg')], str(tmp_path / 'out'))


def test_describe_classifier_background_and_empty_maps():
    cam = np.zeros((4, 4), np.float32)
    line = describe(_result(cam, np.array([0.1, 0.2, 0.7]), category=2), Path('a.png'),
                    Path('a_cam.png'))
    assert line == ('a.png -> a_cam.png: gradcam of class 2 on backbone.stages.3 (score 1.235, '
                    'input 64x96), p=0.700')
    line = describe(_result(cam, empty=True), Path('a.png'), Path('a_cam.png'))
    assert 'energy of the deepest backbone output' in line and 'p=' not in line
    assert line.endswith('; warning: the map is empty (no positive evidence for this target at '
                         'this layer); try another layer, category or method')


@requires_grad_cam  # check_settings looks the method up among grad-cam's classes
def test_check_settings_and_checkpoint_path(tmp_path):
    check_settings(CAMRunSettings('cfg.py', 'none', images=['a.png']))
    check_settings(CAMRunSettings('cfg.py', 'none', list_layers=True))  # no image needed
    with pytest.raises(CAMError, match='image-weight must be in \\[0, 1\\], got 1.5'):
        check_settings(CAMRunSettings('cfg.py', 'none', images=['a.png'], image_weight=1.5))
    with pytest.raises(CAMError, match='pass at least one IMAGE'):
        check_settings(CAMRunSettings('cfg.py', 'none'))
    assert checkpoint_path('None') is None
    checkpoint = _touch(tmp_path / 'model.pth')
    assert checkpoint_path(str(checkpoint)) == str(checkpoint)
    with pytest.raises(CAMError, match='does not exist; pass a .pth file, or "none"'):
        checkpoint_path(str(tmp_path / 'missing.pth'))


@requires_grad_cam
def test_compute_overlays_skips_unreadable_images_of_a_batch(tmp_path):
    good = tmp_path / 'good.png'
    assert cv2.imwrite(str(good), np.full((20, 30, 3), 128, np.uint8))
    bad = tmp_path / 'bad.png'
    bad.write_bytes(b'not a png')
    outs = [tmp_path / 'maps' / 'bad_cam.png', tmp_path / 'maps' / 'good_cam.png']
    (tmp_path / 'maps').mkdir()
    visualizer = StubVisualizer()
    settings = CAMRunSettings('cfg.py', 'none', target_layers=['stages.2'], method='gradcam++',
                              target_category=1, eigen_smooth=True)
    lines, skipped = compute_overlays(visualizer, [bad, good], outs, settings)
    assert [error.path for error in skipped] == [bad]
    assert lines == [describe(_result(np.zeros(1)), good, outs[1])]
    assert sorted(p.name for p in (tmp_path / 'maps').iterdir()) == ['good_cam.png']
    overlay = cv2.imread(str(outs[1]))
    assert overlay.shape == (20, 30, 3) and overlay.std() > 5  # the ramp was drawn in
    assert visualizer.calls == [dict(target_layers=['stages.2'], method='gradcam++', category=1,
                                     feature_score='energy', eigen_smooth=True, aug_smooth=False)]
    # The only image given is not skipped: its error is the run's error.
    with pytest.raises(UnreadableImageError, match='cannot be decoded'):
        compute_overlays(visualizer, [bad], outs[:1], settings)


def test_report_batch_prints_lines_then_warnings_or_fails_when_nothing_was_read(capsys):
    errors = [UnreadableImageError(Path(f'{name}.png'), 'cannot be decoded by OpenCV')
              for name in ('x', 'y')]
    report_batch(['line 1'], errors[:1], total=2)
    captured = capsys.readouterr()
    assert captured.out == 'line 1\n'
    assert captured.err.splitlines() == ['warning: skipped x.png: it cannot be decoded by OpenCV',
                                         'warning: skipped 1 of 2 images; wrote the other 1']
    with pytest.raises(CAMError) as error:
        report_batch([], errors, total=2)
    assert str(error.value) == ('none of the 2 images could be read: x.png cannot be decoded by '
                                'OpenCV (and 1 more); nothing was written')
    assert capsys.readouterr().out == ''
