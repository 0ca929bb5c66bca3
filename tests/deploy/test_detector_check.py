"""The comparison of an exported detector's detections with mmdet's (the export's last check)."""
import numpy as np
import pytest

from repnext_mm.deploy.detector_check import BOUNDS, DetectorCheck, compare_detections


def _detections(boxes, scores, labels, masks=None):
    out = dict(boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
               scores=np.asarray(scores, np.float32), labels=np.asarray(labels, np.int64))
    if masks is not None:
        out['masks'] = np.asarray(masks, bool)
    return out


def _masks(*rows):
    masks = np.zeros((len(rows), 8, 8), bool)
    for index, (top, bottom) in enumerate(rows):
        masks[index, top:bottom, 2:6] = True
    return masks


REFERENCE = _detections([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.6], [1, 2],
                        _masks((0, 4), (4, 8)))


def test_the_same_detections_match_exactly():
    check = compare_detections([(REFERENCE, dict(REFERENCE))])
    assert (check.images, check.reference, check.candidate, check.matched) == (1, 2, 2, 2)
    assert check.agreement == 1.0 and check.box_pixels == 0 and check.mask_iou == 1.0
    assert check.failures() == []


def test_a_shifted_box_a_score_and_a_mask_are_each_measured():
    candidate = _detections([[0, 0, 10, 12], [20, 20, 40, 40]], [0.9, 0.5], [1, 2],
                            _masks((0, 4), (4, 6)))
    check = compare_detections([(REFERENCE, candidate)])
    assert check.matched == 2
    assert check.box_pixels == pytest.approx(2.0)
    assert check.score == pytest.approx(0.1)
    assert check.mask_iou == pytest.approx(0.5)
    assert [f.split()[0] for f in check.failures()] == ['box_pixels', 'score', 'mask_iou']


def test_a_missing_or_relabelled_detection_lowers_the_agreement():
    candidate = _detections([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.6], [1, 3])
    check = compare_detections([(REFERENCE, candidate), (REFERENCE, _detections([], [], []))])
    assert (check.reference, check.candidate, check.matched) == (4, 2, 1)
    assert check.agreement == pytest.approx(2 * 1 / 6)
    assert check.failures()[0] == f'agreement (bound {BOUNDS["agreement"]})'


def test_no_detections_on_either_side_agree():
    empty = _detections([], [], [])
    check = compare_detections([(empty, empty)])
    assert check.agreement == 1.0 and check.failures() == []


def test_a_skipped_check_says_why_and_refuses_nothing():
    check = DetectorCheck(skipped='the test data is not there')
    assert check.failures() == []
    assert check.describe() == 'not checked against mmdet on test images (the test data is not there)'


@pytest.mark.slow
@pytest.mark.usefixtures('shapes_data', 'one_cpu_thread')
def test_random_weights_with_tied_scores_export_and_are_checked_as_detections(tmp_path):
    """``score_thr=0`` on random weights: every detection kept, many with equal scores, whose
    order in the two runtimes differs (a tensor-by-tensor parity check refused such files)."""
    from repnext_mm.deploy.export import ExportSettings, run_export
    from tests.helpers import SHAPES_CONFIGS

    result = run_export(ExportSettings(str(SHAPES_CONFIGS['detector']), 'onnx', shape=(128, 128),
                                       out=str(tmp_path / 'det.onnx'),
                                       cfg_options={'model.test_cfg.rcnn.score_thr': 0.0}))
    random_input, test_images = result.file_check
    assert result.path.is_file()
    for check in (random_input, test_images):
        assert check.skipped is None and check.reference > 0
        assert check.failures() == []
