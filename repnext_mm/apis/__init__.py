"""Config + checkpoint -> checked inputs and a completely loaded model, for every tool.

* :mod:`.config`: reading configs with every check that can run before anything is built;
* :mod:`.inputs`: the data, annotation and pretrained files a run reads;
* :mod:`.checkpoint`: reading checkpoint files safely and loading them strictly;
* :mod:`.model`: building a model, its task, fused checkpoints, preprocessing.

Training and testing from a config (``tools/train.py``, ``tools/test.py``) sit above, in
:mod:`repnext_mm.engine.run`.
"""
from .checkpoint import (StateDictMismatch, compare_state_dicts, extract_state_dict,
                         fused_checkpoint_options, load_state_dict_checked, looks_fused,
                         read_checkpoint, state_dict_of)
from .config import load_config

__all__ = [
    'StateDictMismatch', 'compare_state_dicts', 'extract_state_dict', 'fused_checkpoint_options',
    'load_config', 'load_state_dict_checked', 'looks_fused', 'read_checkpoint', 'state_dict_of',
]
