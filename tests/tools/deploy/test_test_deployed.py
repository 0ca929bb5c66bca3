"""tools/deploy/test_deployed.py: a file that is not a deployed file of the config is one error
line; an exported classifier prints the table and metrics line tools/test.py prints."""
import re

import pytest

from repnext_mm.deploy.deployed_io import deployed_metadata
from tests.helpers import (SHAPES_CONFIGS, requires_onnxruntime, requires_openvino, run_tool,
                           single_error_line, write_onnx_graph)

TOOL = 'tools/deploy/test_deployed.py'


@pytest.mark.parametrize('content, message', [
    ('metadata of a segmentor', 'is a segmentor but .* is a classifier config'),
    ('no metadata', 'has no deployment metadata'),
    ('not onnx', 'is not a readable ONNX file'),
])
def test_a_file_of_another_kind_or_none_is_one_error_line(tmp_path, capsys, content, message):
    path = tmp_path / 'model.onnx'
    if content == 'not onnx':
        path.write_text('a text file, not a model')
    else:
        metadata = (deployed_metadata('segmentor', (128, 128), 4, None, 'fpn.py', ['seg_logits'])
                    if content.startswith('metadata') else None)
        write_onnx_graph(path, metadata)
    status, out, err = run_tool(TOOL, [SHAPES_CONFIGS['classifier'], path,
                                       '--work-dir', tmp_path / 'wd'], capsys)
    assert status == 2
    assert re.search(message, single_error_line(err))
    assert not (tmp_path / 'wd').exists()


@pytest.mark.slow
@requires_onnxruntime
@requires_openvino
@pytest.mark.usefixtures('one_cpu_thread', 'shapes_data')
def test_an_exported_classifier_prints_the_accuracy_table_on_openvino(
        trained_checkpoints, tmp_path, capsys):
    from repnext_mm.deploy.export import ExportSettings, run_export

    path = run_export(ExportSettings(str(SHAPES_CONFIGS['classifier']), 'onnx',
                                     checkpoint=str(trained_checkpoints['classifier']),
                                     shape=(64, 64), out=str(tmp_path / 'cls.onnx'))).path
    status, out, err = run_tool(TOOL, [SHAPES_CONFIGS['classifier'], path, '--backend',
                                       'openvino', '--threads', '1', '--work-dir', tmp_path / 'wd',
                                       '--cfg-options', 'test_dataloader.dataset.indices=10'],
                                capsys)
    assert status == 0, err[-3000:]
    assert 'Epoch(test) [1/1]    accuracy/top1: ' in out
    assert out.splitlines()[-1].startswith('test metrics: {"accuracy/top1": ')
