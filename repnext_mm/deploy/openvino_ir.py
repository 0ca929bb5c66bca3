"""The OpenVINO IR files this package writes (``--int8 --int8-backend openvino``): their two
parts and the metadata they carry.

An IR is a ``.xml`` (the graph) with a ``.bin`` (the weights) beside it. The metadata that an
ONNX file holds in ``metadata_props`` (:mod:`.deployed_io`) an IR holds in its ``rt_info``, under
:data:`RT_INFO_SECTION`, with the same keys and string values.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from repnext_mm.utils.errors import InputError
from repnext_mm.utils.imports import require

#: ``rt_info`` section of an IR that holds this package's metadata.
RT_INFO_SECTION = 'repnext_mm'
#: The suffix of an OpenVINO IR model file.
IR_SUFFIX = '.xml'


def ir_weights_path(xml: str | os.PathLike) -> Path:
    """The ``.bin`` beside an IR's ``.xml``."""
    return Path(xml).with_suffix('.bin')


def set_ir_metadata(model, metadata: Mapping[str, str]) -> None:
    """Records ``{key: string}`` in an ``ov.Model``'s ``rt_info`` (saved with the IR)."""
    for key, value in metadata.items():
        model.set_rt_info(str(value), [RT_INFO_SECTION, key])


def ir_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``{key: string}`` metadata of an IR (empty for an IR written elsewhere).

    Raises:
        InputError: The ``.bin`` is missing beside the ``.xml``, or the file is not a readable IR.
    """
    ov = require('openvino', 'reading an OpenVINO IR')
    path = Path(path)
    if not ir_weights_path(path).is_file():
        raise InputError(f'{path}: its weights {ir_weights_path(path).name} are missing beside '
                         'it; keep the .xml and the .bin together')
    try:
        model = ov.Core().read_model(str(path))
    except RuntimeError as error:
        first = (str(error).strip().splitlines() or ['unreadable'])[0]
        raise InputError(f'{path} is not a readable OpenVINO IR ({first}); re-export it with '
                         'tools/deploy/export.py --int8 --int8-backend openvino') from None
    if not model.has_rt_info([RT_INFO_SECTION]):
        return {}
    section = model.get_rt_info([RT_INFO_SECTION]).astype(dict)
    return {str(key): str(value.astype(str)) for key, value in section.items()}
