"""ONNX export with a structural check and an onnxruntime-vs-torch parity check.

The exported graph takes the normalized image (as after the data preprocessor); mean, std and
channel order are recorded in the model's metadata. The file is only moved into place once
``onnx.checker`` accepts it and onnxruntime reproduces torch's outputs.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from repnext_mm.apis.model import Preprocessing
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import atomic_write, check_output_path
from repnext_mm.utils.imports import require
from .onnx_runtime import onnxruntime_session
from .verify import Difference, RELATIVE_TOLERANCE, compare_outputs, example_inputs

MIN_OPSET = 17
INPUT_NAME = 'input'


@dataclass
class OnnxExport:
    """Result of :func:`export_onnx`: the file and the onnxruntime vs torch difference."""
    path: Path
    difference: Difference
    output_names: list[str]
    output_shapes: dict[str, list[int]]
    file_check: Any = None


def _export(module: nn.Module, example: torch.Tensor, path: Path, output_names: list[str],
            opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # tracer warnings about python control flow on shapes
        # The TorchScript-based exporter: a fixed-shape graph of plain ops, no onnxscript needed.
        torch.onnx.export(module, (example,), str(path), opset_version=opset, dynamo=False,
                          input_names=[INPUT_NAME], output_names=output_names,
                          do_constant_folding=True)


@torch.no_grad()
def export_onnx(module: nn.Module, shape: tuple[int, int], out: str | os.PathLike,
                output_names: list[str], opset: int = MIN_OPSET,
                preprocessing: Preprocessing | None = None, force: bool = False,
                tolerance: float = RELATIVE_TOLERANCE, check_parity: bool = True,
                batch_size: int = 1, log: Callable[[str], None] = print,
                metadata: dict[str, str] | None = None,
                check_file: Callable[[Path], Any] | None = None) -> OnnxExport:
    """Exports ``module`` (``forward(image) -> tuple``) at a fixed input size and verifies it.

    The graph has static shapes (``batch_size`` x 3 x H x W), as mobile runtimes prefer.

    ``metadata`` (:func:`~.deployed_io.deployed_metadata`: task, input shape, classes, outputs,
    thresholds) is written into the file beside the normalization. ``check_file(path)`` (a
    detector: :func:`~.detector_check.check_detector_file`) checks the written file further
    before it is moved into place; it raises to refuse it, and what it returns is kept in
    :attr:`OnnxExport.file_check`.

    Raises:
        InputError: opset below 17, checker failure, or onnxruntime outputs that differ from
            torch's by more than ``tolerance`` (relative); nothing is written then.
    """
    onnx = require('onnx', 'ONNX export')
    if check_parity:
        require('onnxruntime', "ONNX export's parity check")
    if opset < MIN_OPSET:
        raise InputError(f'--opset must be >= {MIN_OPSET} (the opsets this export is tested '
                          f'with), got {opset}')
    out = check_output_path(out, force)
    module = module.eval()
    example = example_inputs(shape, batch_size=batch_size, seed=0)
    expected = list(module(example))
    if len(expected) != len(output_names):
        raise InputError(f'the model returns {len(expected)} outputs but {len(output_names)} '
                          'names were given')
    result: dict = {}

    def write(tmp: Path) -> None:
        _export(module, example, tmp, output_names, opset)
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model)
        entries = dict(producer='repnext_mm', input_layout='NCHW float32, normalized')
        if preprocessing is not None:
            entries.update(mean=str(list(preprocessing.mean)), std=str(list(preprocessing.std)),
                           color_layout=preprocessing.color_layout)
        entries.update(metadata or {})
        for key, value in entries.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(tmp))
        if check_parity:
            session = onnxruntime_session(tmp)
            actual = session.run(output_names, {INPUT_NAME: example.numpy()})
            difference = compare_outputs([torch.from_numpy(a) for a in actual], expected)
            log(f'onnxruntime vs torch: {difference}')
            if not difference.within(tolerance):
                raise InputError(f'onnxruntime does not reproduce torch ({difference}, tolerance '
                                  f'{tolerance:g}); nothing was written')
            result['difference'] = difference
        if check_file is not None:
            result['file_check'] = check_file(tmp)

    try:
        atomic_write(out, write)
    except onnx.checker.ValidationError as error:
        raise InputError(f'onnx.checker rejected the exported graph: {error}') from error
    return OnnxExport(out, result.get('difference', Difference(0.0, 0.0, 0)), output_names,
                      {n: list(t.shape) for n, t in zip(output_names, expected)},
                      result.get('file_check'))
