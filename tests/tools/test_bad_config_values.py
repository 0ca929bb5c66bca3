"""tools/train.py and tools/test.py refuse a bad config value: one line naming its key (issue 19).

The examples of the issue, as a new user writes them on the command line: each is exit status
2, exactly one ``error:`` line that names the key (and the fix), no traceback and no work folder
left behind, whether the value is refused while reading the config (the neck), while building
the model (RepNeXt's own checks) or only when the runner builds the loop, the optimizer or the
dataloader. One mechanism names them all (:mod:`repnext_mm.apis.build_errors`).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from repnext_mm.cli import run_cli
from tests.helpers import REPO, SHAPES_CONFIGS, load_tool, single_error_line
from tests.tools.test_checked_inputs import TINY_TRAIN

pytestmark = pytest.mark.usefixtures('one_cpu_thread')
train_tool = load_tool('tools/train.py').main
eval_tool = load_tool('tools/test.py').main

# (case, config, option, what the line says): the config key first, then the fix.
BAD_VALUES = [
    ('type-typo', 'classifier', 'model.backbone.type=RepNeXtt',
     ["model.backbone.type='RepNeXtt' is not a registered model type",
      "did you mean 'repnext_mm.RepNeXt'?"]),
    ('out_indices-not-indices', 'classifier', 'model.backbone.out_indices=abc',
     ["model.backbone.out_indices='abc': expected a stage index or a sequence of distinct ones",
      'RepNeXt has stages 0..3']),
    ('out_indices-stage-7', 'classifier', 'model.backbone.out_indices=(0,1,2,7)',
     ['model.backbone.out_indices=(0, 1, 2, 7): stage 7 does not exist',
      'RepNeXt has stages 0..3']),
    ('out_indices-3-maps-for-a-4-level-neck', 'detector', 'model.backbone.out_indices=(0,1,2)',
     ['model.backbone.out_indices=(0, 1, 2)', 'gives 3 feature maps with channels [40, 80, 160]',
      'model.neck.in_channels=[40, 80, 160, 320] expects 4', 'make them agree']),
    ('frozen_stages-9', 'classifier', 'model.backbone.frozen_stages=9',
     ['model.backbone.frozen_stages=9: expected an int in -1..4']),
    ('train_cfg-unknown-key', 'classifier', 'train_cfg.max_epochz=1',
     ["train_cfg: EpochBasedTrainLoop has no argument 'max_epochz'",
      "did you mean 'max_epochs'?"]),
    ('optimizer-lr-not-a-number', 'classifier', 'optim_wrapper.optimizer.lr=abc',
     ["optim_wrapper.optimizer.lr='abc' is not a number"]),
    ('batch_size-0', 'classifier', 'train_dataloader.batch_size=0',
     ['train_dataloader.batch_size=0: ', 'positive integer']),
]


def assert_refused(capsys, tool, argv, work_dir, expected) -> None:
    status = run_cli(tool, [*argv, '--work-dir', str(work_dir)])
    line = single_error_line(capsys.readouterr().err)
    assert status == 2, line
    for part in expected:
        assert part in line, line
    assert not work_dir.exists(), sorted(p.name for p in work_dir.rglob('*'))


@pytest.mark.parametrize('config, option, expected', [case[1:] for case in BAD_VALUES],
                         ids=[case[0] for case in BAD_VALUES])
def test_a_bad_config_value_is_one_line_naming_its_key(shapes_data, monkeypatch, tmp_path, capsys,
                                                       config, option, expected):
    monkeypatch.chdir(REPO)
    # The bad value last: it overrides the tiny schedule's batch size where it sets one too.
    assert_refused(capsys, train_tool, [str(SHAPES_CONFIGS[config]), '--cfg-options',
                                        *TINY_TRAIN, option], tmp_path / 'work', expected)


@pytest.fixture(scope='module')
def tiny_checkpoint(shapes_data, tmp_path_factory) -> Path:
    """The bad values above without a bad value: trains (what they refuse is only the value)."""
    work_dir = tmp_path_factory.mktemp('good') / 'work'
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as one_cpu_thread, which a module fixture cannot use
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(REPO)
            assert run_cli(train_tool, [str(SHAPES_CONFIGS['classifier']), '--work-dir',
                                        str(work_dir), '--cfg-options', *TINY_TRAIN]) == 0
    finally:
        torch.set_num_threads(threads)
    return work_dir / 'epoch_1.pth'


def test_a_good_config_still_trains(tiny_checkpoint):
    assert tiny_checkpoint.is_file()


# tools/test.py builds the test loop, its dataloader and evaluator through the same mechanism.
TEST_BAD_VALUES = [
    ('test_cfg-unknown-key', 'test_cfg.fp61=True',
     ["test_cfg: TestLoop has no argument 'fp61'; did you mean 'fp16'?"]),
    ('test_dataloader-batch_size-0', 'test_dataloader.batch_size=0',
     ['test_dataloader.batch_size=0: ', 'positive integer']),
    ('test_evaluator-type-typo', 'test_evaluator.type=Acuracy',
     ["test_evaluator.type='Acuracy' is not a registered metric type",
      "did you mean 'Accuracy'?"]),
]


@pytest.mark.parametrize('option, expected', [case[1:] for case in TEST_BAD_VALUES],
                         ids=[case[0] for case in TEST_BAD_VALUES])
def test_a_bad_config_value_in_test_is_one_line_naming_its_key(tiny_checkpoint, monkeypatch,
                                                               tmp_path, capsys, option,
                                                               expected):
    monkeypatch.chdir(REPO)
    assert_refused(capsys, eval_tool, [str(SHAPES_CONFIGS['classifier']), str(tiny_checkpoint),
                                       '--cfg-options', option], tmp_path / 'work', expected)
