"""A backbone training step in its three forms, and its time and peak memory.

The forms (:data:`TRAIN_FORMS`): the fast training form (``srp_forward='merged'``: one depthwise
conv per SRP branch set, its kernel rebuilt from the branch weights on every step), the literal
multi-branch form (``'branches'``) and the *SRP-free bound*, which replaces every SRP conv by a
strided copy: no implementation of the SRP convolutions can beat it, so it bounds the attainable
ratios.
"""
from __future__ import annotations

import copy
import gc
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from repnext_mm.models.backbones.repnext import RepDWConvM, RepDWConvS, RepNeXt

TRAIN_BATCH, TRAIN_SIZE = 16, 224
LAYOUTS = {'nchw': torch.contiguous_format, 'channels_last': torch.channels_last}
TRAIN_FORMS = {'merged': "srp_forward='merged'",
               'branches': "srp_forward='branches' (literal)",
               'srp-free': 'SRP-free bound'}
# The memory workers set glibc's mmap threshold so that every tensor above 64 KiB gets its own
# mapping, returned to the OS when freed: the resident set then follows the live tensors instead
# of glibc's retained heap, and its high-water mark is the step's real peak.
MEMORY_WORKER_ENV = {'MALLOC_MMAP_THRESHOLD_': str(64 * 1024)}
MEMORY_METHOD = (
    'peak resident-set growth during one step (Linux VmHWM, reset through /proc/self/clear_refs '
    'after a warm-up step), each form in its own process with glibc MALLOC_MMAP_THRESHOLD_=64KiB '
    'so freed tensors leave the resident set; counts everything the step allocates (activations, '
    'gradients, workspaces), not the weights or the input; median of the measured steps')
_WORKER_CODE = 'import sys; from repnext_mm.benchmark.training import _memory_worker; ' \
               '_memory_worker(sys.argv[1:])'


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` of a square side or a pair (a list after a JSON round trip)."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return height, width


@dataclass(frozen=True)
class TrainingCase:
    """One measured training step: the backbone, its form, memory format and input batch.

    Attributes:
        arch: A RepNeXt arch name or ``dict(widths=..., depths=...)``.
        form: A key of :data:`TRAIN_FORMS`.
        layout: A key of :data:`LAYOUTS`.
        batch_size: Images per step.
        image_size: Side of square images, or ``(height, width)``.
        with_cp: Activation checkpointing in the backbone (``RepNeXt(with_cp=True)``).
    """
    arch: str | dict
    form: str
    layout: str = 'nchw'
    batch_size: int = TRAIN_BATCH
    image_size: int | tuple[int, int] = TRAIN_SIZE
    with_cp: bool = False

    def __post_init__(self) -> None:
        if self.form not in TRAIN_FORMS or self.layout not in LAYOUTS:
            raise ValueError(f'form must be one of {list(TRAIN_FORMS)} and layout one of '
                             f'{list(LAYOUTS)}, got {self.form!r} and {self.layout!r}')

    def build_model(self, device: str = 'cpu') -> RepNeXt:
        """The backbone in this form and layout, in train mode."""
        model = RepNeXt(self.arch, srp_forward='merged' if self.form == 'srp-free' else self.form,
                        with_cp=self.with_cp)
        if self.form == 'srp-free':
            model = srp_free(model)
        return model.train().to(device=device, memory_format=LAYOUTS[self.layout])

    def inputs(self, device: str = 'cpu') -> Tensor:
        """A random input batch in this layout."""
        inputs = torch.randn(self.batch_size, 3, *image_hw(self.image_size), device=device)
        return inputs.contiguous(memory_format=LAYOUTS[self.layout])


class StridedCopy(nn.Module):
    """Stands in for an SRP conv in the bound model: same output shape, the least possible work
    (one strided copy) and nothing saved for backward."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[..., ::self.stride, ::self.stride].clone()


def srp_free(model: RepNeXt) -> RepNeXt:
    """A copy of the backbone with every SRP conv replaced by :class:`StridedCopy`."""
    model = copy.deepcopy(model)
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, (RepDWConvS, RepDWConvM))]
    for name, module in targets:
        parent_name, _, attr = name.rpartition('.')
        setattr(model.get_submodule(parent_name), attr, StridedCopy(module.stride))
    return model


def training_step(model: nn.Module, inputs: Tensor) -> None:
    """Forward and backward of the mean of every stage output."""
    model.zero_grad(set_to_none=True)
    outputs = model(inputs)
    sum(out.float().mean() for out in outputs).backward()


def _proc_status_bytes(key: str) -> int:
    with open('/proc/self/status', encoding='utf-8') as status:
        for line in status:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'{key} not in /proc/self/status')


def training_memory_peaks(case: TrainingCase, steps: int = 1) -> list[int]:
    """Peak resident-set growth of each of ``steps`` training steps, in bytes (Linux only).

    Meaningful only in a fresh process with :data:`MEMORY_WORKER_ENV` set, which is what
    :func:`measure_training_memory` runs it in.
    """
    torch.manual_seed(0)
    model = case.build_model()
    inputs = case.inputs()
    training_step(model, inputs)  # warm-up: one-time allocations (kernel caches, ...) excluded
    peaks = []
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        gc.collect()
        with open('/proc/self/clear_refs', 'w', encoding='utf-8') as clear_refs:
            clear_refs.write('5')  # resets the peak resident set size (VmHWM) to the current one
        base = _proc_status_bytes('VmRSS')
        training_step(model, inputs)
        peaks.append(_proc_status_bytes('VmHWM') - base)
    return peaks


def _memory_worker(argv: list[str]) -> None:
    """Subprocess entry: ``CASE_JSON THREADS STEPS``; prints the JSON list of peaks."""
    case_json, threads, steps = argv
    torch.set_num_threads(int(threads))
    print(json.dumps(training_memory_peaks(TrainingCase(**json.loads(case_json)), int(steps))))


def _worker_environment() -> dict[str, str]:
    # The worker imports this package even when it runs from a checkout without being installed.
    package_root = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get('PYTHONPATH')]))
    return {**os.environ, **MEMORY_WORKER_ENV, 'PYTHONPATH': python_path}


def measure_training_memory(case: TrainingCase, threads: int, steps: int = 1) -> list[int] | None:
    """Runs :func:`training_memory_peaks` in a fresh process; None where /proc is unavailable."""
    if not Path('/proc/self/clear_refs').exists():
        return None
    command = [sys.executable, '-c', _WORKER_CODE, json.dumps(asdict(case)), str(threads),
               str(steps)]
    result = subprocess.run(command, env=_worker_environment(), capture_output=True, text=True,
                            check=False)
    if result.returncode:
        print(f'  memory worker for {case.arch}/{case.form}/{case.layout} failed:\n'
              f'{result.stderr[-2000:]}')
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def cuda_training_memory(model: nn.Module, inputs: Tensor) -> int:
    """Growth of ``torch.cuda.max_memory_allocated()`` during one training step, in bytes."""
    torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    training_step(model, inputs)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base
