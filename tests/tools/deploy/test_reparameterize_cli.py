"""tools/deploy/reparameterize.py: output, printed options, exit status on bad input."""
import os

from mmengine.runner import load_checkpoint

from repnext_mm.deploy.builder import build_model, load_config
from tests.deploy.conftest import CONFIGS
from tests.deploy.test_reparameterize import parse_cfg_options
from .tool_runner import run_tool

TOOL = 'tools/deploy/reparameterize.py'


def test_cli_writes_and_prints_the_deploy_options(trained_checkpoints, tmp_path, capsys):
    out = tmp_path / 'fused.pth'
    status, stdout, _ = run_tool(TOOL, [CONFIGS['classifier'], trained_checkpoints['classifier'],
                                        out, '--shape', 64, 64], capsys)
    assert status == 0
    assert 'original vs fused outputs: max relative difference' in stdout
    options_line = next(line for line in stdout.splitlines() if line.strip().startswith('--cfg-options'))
    options = options_line.split('--cfg-options', 1)[1].strip()
    assert options == 'model.backbone.deploy=True model.head.deploy=True'
    model = build_model(load_config(CONFIGS['classifier']), parse_cfg_options(options))
    load_checkpoint(model, str(out), map_location='cpu', strict=True)


def test_cli_reports_errors_with_status_2_and_writes_nothing(trained_checkpoints, tmp_path, capsys):
    out = tmp_path / 'fused.pth'
    out.write_text('existing')
    status, _, stderr = run_tool(TOOL, [CONFIGS['classifier'], trained_checkpoints['classifier'],
                                        out], capsys)
    assert status == 2
    assert stderr.startswith('error: ') and '--force' in stderr
    assert out.read_text() == 'existing'

    status, _, stderr = run_tool(TOOL, [CONFIGS['classifier'], tmp_path / 'missing.pth',
                                        tmp_path / 'new.pth'], capsys)
    assert status == 2 and 'does not exist' in stderr
    assert sorted(os.listdir(tmp_path)) == ['fused.pth']
