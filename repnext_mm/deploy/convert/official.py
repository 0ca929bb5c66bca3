"""Converting a released file: recognize it, rename, check against a config's model, write.

Nothing is written unless the converted weights fill the model of the config exactly: ours for
the file's kind and arch (with the file's class count), or the one given with ``config``, which
must build the same kind of model with the same arch.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from mmengine.logging import MMLogger

from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import atomic_torch_save, check_output_path
from .classifier import convert_author_state_dict
from .common import ConversionResult, check_complete, examples
from .downstream import convert_downstream_state_dict
from .fused import convert_fused_state_dict
from .source import Source, read_source

OutputTask = Literal['model', 'backbone']
#: The package's configs: ``repnext_mm/.mim/configs`` (a link to ``configs/`` in a checkout).
PACKAGE_ROOT = Path(__file__).resolve().parents[2] / '.mim'


@dataclass
class ConversionReport:
    """What :func:`convert_official_checkpoint` did.

    Attributes:
        source: The file read and its kind.
        result: The converted weights and where each source entry went.
        task: ``'model'`` (the whole model) or ``'backbone'`` (``backbone.`` entries only).
        config: The config the written file loads into (``None`` for ``task='backbone'``).
        cfg_options: Overrides the config needs for it (the fused structure, another class
            count).
        dst: The written file.
    """
    source: Source
    result: ConversionResult
    task: OutputTask
    config: str | None
    cfg_options: dict[str, Any]
    dst: Path


def convert_source(source: Source, task: OutputTask = 'model',
                   arch: str = 'auto') -> ConversionResult:
    """Renames (and for the fused kind, folds) a recognized file's weights."""
    kind = source.kind.name
    if kind in ('imagenet', 'timm'):
        return convert_author_state_dict(source.weights, 'cls' if task == 'model' else 'backbone',
                                         arch)
    if kind in ('detector', 'segmentor'):
        return convert_downstream_state_dict(source.weights, kind, arch,
                                             backbone_only=task == 'backbone')
    if task == 'backbone':
        raise InputError(f'{source.path} is {source.kind.found}: a fused backbone cannot start '
                         'a training; convert the training-form release '
                         'repnext_mX_distill_300e.pth with --task backbone instead')
    return convert_fused_state_dict(source.weights, source.bn_eps, arch)


def _target_model(config: str, options: dict[str, Any]) -> tuple[torch.nn.Module, dict]:
    """The config's model on the meta device (names and shapes only, no memory), and the
    entries of ``options`` that change the config."""
    from repnext_mm.apis.config import lookup_key
    from repnext_mm.apis.model import build_model, load_model_config

    cfg = load_model_config(config)
    changes = {k: v for k, v in options.items() if lookup_key(cfg, k.split('.')) != v}
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # building logs its choices (mmpretrain: one-hot labels)
    try:
        with warnings.catch_warnings():  # and deprecation notes of the libraries (mmseg)
            warnings.simplefilter('ignore')
            try:
                with torch.device('meta'):
                    return build_model(cfg, changes), changes
            except InputError:  # a part that cannot be built on the meta device: build it
                return build_model(cfg, changes), changes
    finally:
        logger.setLevel(level)


def check_against_config(source: Source, result: ConversionResult, task: OutputTask,
                         config: str | None, options: dict[str, Any]
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``result``'s weights in the order of the config's model, which they must fill exactly.

    Args:
        source: The file and its kind.
        result: Its converted weights.
        task: ``'backbone'`` compares the ``backbone.`` entries only.
        config: The config to check against; ``None``: ours for the kind and arch.
        options: Overrides that build the model holding the weights.

    Returns:
        The ordered weights, and the overrides the config needs (those that change it).

    Raises:
        InputError: The config builds another kind of model or another arch, or an entry is
            missing, has no place or the wrong shape (named).
    """
    from repnext_mm.apis.model import backbone_arch_name, model_task

    ours = source.kind.config.format(arch=result.arch)
    model, changes = _target_model(config or str(PACKAGE_ROOT / ours), options)
    built = model_task(model)
    if task == 'model' and built != source.kind.task:
        raise InputError(f'{source.path} is {source.kind.found}, but {config} builds a {built}; '
                         f'pass a {source.kind.task} config such as {ours}. Nothing was written.')
    arch = backbone_arch_name(getattr(model, 'backbone', None))
    if arch != result.arch:
        built_arch = f'RepNeXt-{arch.upper()}' if arch else 'another backbone'
        raise InputError(f'{source.path} holds RepNeXt-{result.arch.upper()} weights, but '
                         f'{config} builds {built_arch}; use {ours}. Nothing was written.')
    expected = {k: v for k, v in model.state_dict().items()
                if task == 'model' or k.startswith('backbone.')}
    hint = None if config is None else (
        f'Pass a config the weights fit (e.g. {ours}), or convert without --config and fine-tune '
        'with load_from_allow_mismatch naming the layers that differ.')
    ordered = check_complete(result.state_dict, expected, result.mapped,
                             f'{"model" if task == "model" else "backbone"} of '
                             f'{config or ours}' + (f' with {changes}' if changes else ''), hint)
    return ordered, changes


def _meta(report: ConversionReport) -> dict[str, Any]:
    source, result = report.source, report.result
    fused = source.kind.name == 'fused'
    info = dict(
        converted_from=os.path.abspath(source.path), source_kind=source.kind.name,
        source_format=source.kind.found, source_weights=source.entry,
        source_epoch=source.info.get('epoch'), source_iter=source.info.get('iter'),
        task=report.task, arch=result.arch, num_classes=result.num_classes,
        config=report.config, fused=fused)
    if fused:  # tools/test.py builds the fused model from these (fused_checkpoint_options)
        info['cfg_options'] = dict(source.kind.cfg_options)
    meta: dict[str, Any] = dict(repnext_mm=info)
    if 'classes' in source.info:
        meta['dataset_meta'] = dict(classes=tuple(source.info['classes']))
        if 'palette' in source.info:
            meta['dataset_meta']['palette'] = [list(c) for c in source.info['palette']]
    return meta


def convert_official_checkpoint(src: str | os.PathLike, dst: str | os.PathLike,
                                task: OutputTask = 'model', arch: str = 'auto',
                                weights: str = 'model', config: str | os.PathLike | None = None,
                                force: bool = False, unsafe_full_unpickle: bool = False
                                ) -> ConversionReport:
    """Converts one of the authors' released files and writes ``{'state_dict', 'meta'}``.

    Args:
        src: The released file (any of the kinds in :mod:`.source`).
        dst: The checkpoint to write.
        task: ``'model'``: the whole model, for our config of its kind; ``'backbone'``:
            ``backbone.`` entries only, for ``init_cfg`` Pretrained with ``prefix='backbone.'``.
        arch: ``'auto'`` or the arch the weights must have.
        weights: ``'model'`` or ``'ema'`` (the EMA weights, where the file has them).
        config: Check the result against this config's model instead of ours (same kind and
            arch, strictly: also the class count).
        force: Overwrite ``dst``.
        unsafe_full_unpickle: Unpickle arbitrary objects in ``src`` (trusted files only).

    Raises:
        InputError: Any problem with the inputs; nothing is written then.
    """
    if task not in ('model', 'backbone'):
        raise InputError(f"task must be 'model' or 'backbone', got {task!r}")
    dst = check_output_path(dst, force)
    source = read_source(src, weights, unsafe_full_unpickle)
    result = convert_source(source, task, arch)
    options: dict[str, Any] = dict(source.kind.cfg_options)
    if config is None and task == 'model':  # our config, with the file's class count
        options.update({key: result.num_classes for key in source.kind.class_options})
    result.state_dict, changes = check_against_config(
        source, result, task, None if config is None else str(config), options)
    config_name = (str(config) if config is not None else
                   source.kind.config.format(arch=result.arch)) if task == 'model' else None
    report = ConversionReport(source, result, task, config_name, changes, dst)
    atomic_torch_save(dict(state_dict=result.state_dict, meta=_meta(report)), dst)
    return report


def describe(report: ConversionReport) -> list[str]:
    """What was found, converted, left out and written, and how to use it (the tool's output)."""
    source, result, dst = report.source, report.result, report.dst
    lines = [f'found {source.kind.found}: RepNeXt-{result.arch.upper()}'
             + (f', {result.num_classes} classes' if result.num_classes else '')
             + (f', weights "{source.entry}"' if source.entry else '')
             + (f', epoch {source.info["epoch"]} as the file records it' if 'epoch' in source.info
                else '')]
    renamed = sum(source_key != ours for source_key, ours in result.mapped.items())
    lines.append(f'converted {len(result.state_dict)} entries: {renamed} renamed, '
                 f'{len(result.mapped) - renamed} kept as named'
                 + (f'; {len({k.rsplit(".", 1)[0] for k in result.folded})} BatchNorm layers '
                    f'({len(result.folded)} entries) folded into the neighbouring convolutions, '
                    'exactly (the result holds no BatchNorm)' if result.folded else ''))
    reasons: dict[str, list[str]] = {}
    for key, reason in result.dropped.items():
        reasons.setdefault(reason, []).append(key)
    for reason, keys in reasons.items():
        lines.append(f'left out {len(keys)} weight entries, {reason}: {examples(keys, 8)}')
    for entry, reason in source.left_out.items():
        lines.append(f'not converted: {entry}: {reason}')
    lines.append(f'wrote {dst}')
    if report.task == 'backbone':
        lines.append(f"use it with: init_cfg=dict(type='Pretrained', checkpoint='{dst}', "
                     "prefix='backbone.')")
        return lines
    from repnext_mm.apis.model import format_cfg_options

    options = format_cfg_options(report.cfg_options)
    lines.append(f'evaluate it with: python tools/test.py {report.config} {dst}'
                 + (f' --cfg-options {options}' if options else ''))
    if source.kind.name != 'fused':
        lines.append(f"fine-tune from it: load_from = '{dst}' (another class count: "
                     f'load_from_allow_mismatch = {list(source.kind.class_layers)})')
    return lines
