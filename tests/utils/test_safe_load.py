"""MMEngine checkpoints load under torch's ``weights_only=True`` default, and nothing more does."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

import repnext_mm  # noqa: F401  (registers the safe globals)


def test_safe_globals_let_weights_only_load_read_mmengine_meta(tmp_path):
    buffer = HistoryBuffer()
    buffer.update(1.5)
    path = tmp_path / 'ckpt.pth'
    torch.save({'meta': {'seed': np.int64(3), 'lr': np.float64(0.1), 'hist': buffer,
                         'arr': np.arange(3)}}, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded['meta']['seed'] == 3 and loaded['meta']['hist'].current() == 1.5


def test_weights_only_getattr_stand_in_refuses_other_attributes(tmp_path):
    """Only HistoryBuffer's statistics methods resolve; any other getattr in a checkpoint fails."""
    class Sneaky:
        def __reduce__(self):
            return getattr, (HistoryBuffer, 'update')

    path = tmp_path / 'sneaky.pth'
    torch.save({'x': Sneaky()}, path)
    with pytest.raises(pickle.UnpicklingError, match='only HistoryBuffer statistics methods'):
        torch.load(path, weights_only=True)


@pytest.mark.slow  # a fresh interpreter importing torch and repnext_mm
def test_history_buffer_loads_in_a_fresh_process(tmp_path):
    """A process that never built a HistoryBuffer has an empty statistics registry."""
    import subprocess
    import sys
    buffer = HistoryBuffer()
    buffer.update(2.0)
    path = tmp_path / 'hub.pth'
    torch.save({'message_hub': {'log_scalars': {'loss': buffer}}}, path)
    script = ('import torch, repnext_mm; '
              f'print(torch.load({str(path)!r}, weights_only=True)["message_hub"]["log_scalars"]["loss"].mean())')
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == '2.0'
