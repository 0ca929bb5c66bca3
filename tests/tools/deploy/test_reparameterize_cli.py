"""tools/deploy/reparameterize.py: output, printed options, exit status on bad input."""
import os

from mmengine.runner import load_checkpoint

from repnext_mm.apis.model import build_model, load_model_config
from tests.deploy.test_reparameterize import parse_cfg_options
from tests.helpers import SHAPES_CONFIGS, run_tool

TOOL = 'tools/deploy/reparameterize.py'


def test_cli_writes_and_prints_the_deploy_options(trained_checkpoints, tmp_path, capsys):
    out = tmp_path / 'fused.pth'
    status, stdout, _ = run_tool(TOOL, [SHAPES_CONFIGS['classifier'],
                                        trained_checkpoints['classifier'], out, '--shape', 64, 64],
                                 capsys)
    assert status == 0
    assert 'original vs fused outputs: max relative difference' in stdout
    assert f'evaluate it with: python tools/test.py {SHAPES_CONFIGS["classifier"]} {out}' in stdout
    options_line = next(line for line in stdout.splitlines() if 'with --cfg-options' in line)
    options = options_line.split('--cfg-options', 1)[1].strip().rstrip(')')
    assert options == 'model.backbone.deploy=True model.head.deploy=True'
    model = build_model(load_model_config(SHAPES_CONFIGS['classifier']), parse_cfg_options(options))
    load_checkpoint(model, str(out), map_location='cpu', strict=True)


def test_cli_reports_errors_with_status_2_and_writes_nothing(trained_checkpoints, tmp_path, capsys):
    out = tmp_path / 'fused.pth'
    out.write_text('existing')
    status, _, stderr = run_tool(TOOL, [SHAPES_CONFIGS['classifier'],
                                        trained_checkpoints['classifier'], out], capsys)
    assert status == 2
    assert stderr.startswith('error: ') and '--force' in stderr
    assert out.read_text() == 'existing'

    status, _, stderr = run_tool(TOOL, [SHAPES_CONFIGS['classifier'], tmp_path / 'missing.pth',
                                        tmp_path / 'new.pth'], capsys)
    assert status == 2 and 'does not exist' in stderr
    assert sorted(os.listdir(tmp_path)) == ['fused.pth']


def test_a_directory_as_out_is_refused_even_with_force(trained_checkpoints, tmp_path, capsys):
    out = tmp_path / 'fused.pth'
    (out / 'keep').mkdir(parents=True)
    for extra in ([], ['--force']):
        status, stdout, stderr = run_tool(TOOL, [SHAPES_CONFIGS['classifier'],
                                                 trained_checkpoints['classifier'], out, *extra],
                                          capsys)
        assert status == 2, stdout
        errors = [line for line in stderr.splitlines() if line.startswith('error:')]
        assert len(errors) == 1 and f'{out} is a directory; pass a file path' in errors[0]
        # No traceback: main returned (in-process, an uncaught exception would fail the test)
        # and its error line is the last word. ('Traceback' itself is not checked: MMEngine's
        # logger may still hold the closed capture stream of an earlier test and then
        # prints a '--- Logging error ---' traceback of its own.)
        assert stderr.rstrip().splitlines()[-1] == errors[0]
        assert 'IsADirectoryError' not in stderr and 'already exists' not in stderr
        assert sorted(os.listdir(tmp_path)) == ['fused.pth'] and os.listdir(out) == ['keep']
