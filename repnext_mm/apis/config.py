"""Reading configs, with every check that can run before anything is built.

One reader for every tool: a missing, unreadable or syntactically broken file, a ``--cfg-options``
entry that does not apply, an unsupported ``default_scope``, an unknown RepNeXt arch, an
argument a model part does not take and backbone outputs that do not fit the neck are each an
:class:`~repnext_mm.utils.errors.InputError` naming the fix, raised before a runner (and its
dated work folder) exists. Values that only fail while the config is built are named by
:func:`repnext_mm.apis.build_errors.config_errors`.
"""
from __future__ import annotations

import difflib
import inspect
import os
import os.path as osp
from typing import Any, Iterator, Mapping, Sequence

from mmengine.config import Config, ConfigDict

from repnext_mm.utils.errors import InputError

SUPPORTED_SCOPES = ('mmdet', 'mmseg', 'mmpretrain')


REPNEXT_TYPES = ('RepNeXt', 'repnext_mm.RepNeXt')


def _read_config_file(path: str) -> Config:
    try:
        return Config.fromfile(path)
    except SyntaxError as error:
        # mmengine parses the text without a file name: '<unknown>' means this file.
        filename = path if error.filename in (None, '<unknown>') else error.filename
        where = f'{filename}, line {error.lineno}' if error.lineno else filename
        raise InputError(f'config {where}: syntax error: {error.msg}; fix the file') from None
    except Exception as error:  # mmengine raises many types for configs it cannot read
        first = (str(error).strip().splitlines() or [''])[0]
        raise InputError(f'cannot read config {path}: {type(error).__name__}: {first}') from None


def lookup_key(node: Any, parts: Sequence[str]) -> Any:
    """``node[parts[0]][parts[1]]...`` (list items by index), or ``None`` if a step is absent."""
    for part in parts:
        if isinstance(node, (Mapping, Config)):
            node = node.get(part)
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def iter_config_dicts(node: Any, key: str) -> Iterator[tuple[str, dict]]:
    """Yields ``(dotted key, dict)`` for every dict nested in ``node`` (itself included)."""
    if isinstance(node, dict):
        yield key, node
        for name, value in node.items():
            yield from iter_config_dicts(value, f'{key}.{name}')
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from iter_config_dicts(value, f'{key}.{index}')


def expand_named_archs(cfg: Config, cfg_options: Mapping[str, Any]) -> None:
    """Lets ``--cfg-options model.backbone.arch.depths=[...]`` edit a named RepNeXt arch.

    The configs name their arch (``arch='m4'``); an option below ``arch`` would make MMEngine
    merge a dict into that string and fail. The named arch is first replaced by its
    ``dict(widths=..., depths=...)`` from ``RepNeXt.arch_settings``, which the option then edits.
    """
    from repnext_mm.models.backbones.repnext import RepNeXt

    for key in cfg_options:
        parts = key.split('.')
        if 'arch' not in parts[:-1]:
            continue
        index = parts.index('arch')
        backbone = lookup_key(cfg, parts[:index])
        name = lookup_key(backbone, ['arch'])
        if (isinstance(backbone, Mapping) and backbone.get('type') in REPNEXT_TYPES
                and isinstance(name, str) and name in RepNeXt.arch_settings):
            setting = RepNeXt.arch_settings[name]
            backbone['arch'] = ConfigDict(widths=list(setting['widths']),
                                          depths=list(setting['depths']))


#: Top-level keys read after loading besides ``Runner``'s arguments (its own extras, the
#: libraries' test-time augmentation).
READ_TOP_LEVEL_KEYS = ('runner_type', 'custom_imports', 'compile', 'find_unused_parameters',
                       'model_wrapper_cfg', 'strategy', 'tta_model', 'tta_pipeline')
#: How many of the keys holding a variable's value an error names.
HOLDERS_NAMED = 3


def _leaves(node: Any, key: str) -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every value in ``node`` that is not a dict (lists by item)."""
    if isinstance(node, Mapping):
        for name, value in node.items():
            yield from _leaves(value, f'{key}.{name}' if key else str(name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, f'{key}.{index}')
    else:
        yield key, node


def variable_holders(cfg: Config, name: str) -> list[str]:
    """The keys that hold the value of the top-level variable ``name`` (copied from it when
    the file was loaded): equal values (a number or flag only under the same name), else
    strings that start with it (``data_root + 'train/'``)."""
    value = cfg[name]
    distinctive = (isinstance(value, str) and value) or (isinstance(value, tuple) and value)
    equal, extended = [], []
    for key, leaf in _leaves(cfg._cfg_dict, ''):
        if key == name or key.startswith(name + '.') or type(leaf) is not type(value):
            continue
        if leaf == value and (distinctive or key.rsplit('.', 1)[-1] == name):
            equal.append(key)
        elif isinstance(value, str) and value and leaf.startswith(value):
            extended.append(key)
    return equal or extended


def check_plain_variables(cfg: Config, cfg_options: Mapping[str, Any]) -> None:
    """A top-level ``--cfg-options`` key must change something.

    A config's plain variables (``data_root = 'data/coco/'``) are copied into the parts that
    use them when the file is loaded; setting one afterwards changes only the variable, and the
    run would silently use the old value. A top-level key that nothing reads after loading
    (not an argument of MMEngine's ``Runner`` nor :data:`READ_TOP_LEVEL_KEYS`), whose value is
    a plain one held by other keys, is refused with those keys.

    Raises:
        InputError: Names the keys to set instead.
    """
    from mmengine.runner import Runner

    read = set(inspect.signature(Runner.__init__).parameters) | set(READ_TOP_LEVEL_KEYS)
    for name, new in cfg_options.items():
        if '.' in name or name in read or name not in cfg:
            continue
        old = cfg[name]
        if isinstance(old, (Mapping, list)) or new == old:
            continue
        holders = variable_holders(cfg, name)
        if not holders:
            continue
        shown = ', '.join(holders[:HOLDERS_NAMED]) + (
            f' (and {len(holders) - HOLDERS_NAMED} more)' if len(holders) > HOLDERS_NAMED else '')
        raise InputError(
            f'--cfg-options {name}={new}: {name} is a variable of the config, copied into the '
            f'parts that use it when the file was read, so setting it changes nothing (the run '
            f'would use {old!r}); set the keys that hold its value instead: {shown}, e.g. '
            f'--cfg-options ' + ' '.join(f'{key}={new}' for key in holders[:2]))


def load_config(path: str, cfg_options: dict | None = None) -> Config:
    """Reads ``path``, applies ``--cfg-options`` and checks ``default_scope`` and the model.

    Raises:
        InputError: The file does not exist or cannot be read, an option does not apply, the
            scope is not one the tools support, a model part gets an argument it does not take,
            or the backbone's feature maps do not fit the neck or head.
    """
    if osp.isdir(path):
        raise InputError(f'config {path!r} is a directory; pass a .py config file, e.g. '
                         'configs/mmdet/mask_rcnn_repnext_m4_fpn_1x_coco.py')
    if not osp.isfile(path):
        raise InputError(f'config file {path!r} does not exist (relative to {os.getcwd()}); the '
                         'configs are under configs/mmdet, configs/mmseg and configs/mmpretrain')
    cfg = _read_config_file(path)
    if cfg_options:
        check_plain_variables(cfg, cfg_options)
        expand_named_archs(cfg, cfg_options)
        try:
            cfg.merge_from_dict(cfg_options)
        except Exception as error:  # mmengine: TypeError / KeyError with its own wording
            first = (str(error).strip().splitlines() or [''])[0]
            raise InputError(f'--cfg-options {" ".join(f"{k}={v}" for k, v in cfg_options.items())}'
                             f' does not apply to {path}: {first}') from None
    scope = cfg.get('default_scope')
    if scope not in SUPPORTED_SCOPES:
        raise InputError(f'{path} sets default_scope={scope!r}; tools/train.py and tools/test.py '
                         f'run configs whose default_scope is one of {SUPPORTED_SCOPES} (inherit '
                         "that library's default_runtime base)")
    check_repnext_archs(cfg)
    check_model_arguments(cfg)
    check_backbone_fits_neck(cfg)
    return cfg


def set_work_dir(cfg: Config, config_path: str, work_dir: str | None) -> None:
    """``--work-dir`` > the config's ``work_dir`` > ``./work_dirs/<config file name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def check_repnext_archs(cfg: Config) -> None:
    """Validates the ``arch`` of every RepNeXt in ``cfg.model`` before the model is built."""
    from repnext_mm.models.backbones.repnext import RepNeXt

    for key, node in iter_config_dicts(cfg.get('model'), 'model'):
        if node.get('type') in REPNEXT_TYPES:
            try:
                RepNeXt.parse_arch(node.get('arch', 'm1'))
            except ValueError as error:
                raise InputError(f'{key}.arch: {error}') from None


#: Libraries whose model classes are checked for unknown arguments (their ``__init__``s name
#: every argument; torch / mmcv layers built from ``norm_cfg`` and the like take extra keys).
CHECKED_LIBRARIES = ('repnext_mm', 'mmdet', 'mmseg', 'mmpretrain')


def _registered_model_class(type_name: Any, scope: str) -> type | None:
    from mmengine.registry import MODELS

    if not isinstance(type_name, str):
        return None
    try:
        # The scope's own registry (mmdet.registry.MODELS, ...), as MMEngine's build uses.
        with MODELS.switch_scope_and_registry(scope) as registry:
            cls = registry.get(type_name)
    except Exception:  # an unknown scope prefix or type: the build reports it
        return None
    return cls if inspect.isclass(cls) else None


def check_model_arguments(cfg: Config) -> None:
    """Every model part gets only arguments its class takes (before any work folder exists).

    Raises:
        InputError: Names the part, the argument and the closest accepted one, e.g.
            "model.backbone: RepNeXt has no argument 'archh'; did you mean 'arch'?".
    """
    import repnext_mm.models  # noqa: F401  (registers RepNeXt before the lookups)

    # No init_default_scope: it would change the process-wide scope (and log about it) as a
    # side effect of a check; each lookup switches to the scope's registry by itself.
    scope = cfg.get('default_scope')
    for key, node in iter_config_dicts(cfg.get('model'), 'model'):
        cls = _registered_model_class(node.get('type'), scope)
        if cls is None or not cls.__module__.startswith(CHECKED_LIBRARIES):
            continue
        parameters = inspect.signature(cls.__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            continue
        accepted = [name for name in parameters if name != 'self']
        for name in node:
            if name == 'type' or name in accepted or (name.startswith('_') and name.endswith('_')):
                continue  # MMEngine's own keys (_scope_, _delete_) are not arguments
            raise InputError(unknown_argument_message(key, cls.__name__, name, accepted))


def unknown_argument_message(key: str, class_name: str, name: str, accepted: Sequence[str]) -> str:
    """"<key>: <class> has no argument '<name>'; did you mean '<closest>'?" (else what it takes)."""
    close = difflib.get_close_matches(name, accepted, n=1)
    fix = f"did you mean '{close[0]}'?" if close else f'it takes {", ".join(accepted)}'
    return f"{key}: {class_name} has no argument '{name}'; {fix}"


#: Neck types that pool each feature map to a vector: the head sees the last map's channels.
POOLING_NECKS = ('GlobalAveragePooling', 'mmpretrain.GlobalAveragePooling')


def check_backbone_fits_neck(cfg: Config) -> None:
    """A RepNeXt backbone's feature maps fit what the next part expects, before anything is built.

    An FPN neck takes one map per entry of ``in_channels``; a classifier head after global
    pooling takes the last map's channels. A mismatch would build and fail only in the first
    forward pass, deep inside the neck or head.

    Raises:
        InputError: Names the backbone's ``out_indices`` with the channels they give and the
            neck's (or head's) ``in_channels``.
    """
    from repnext_mm.models.backbones.repnext import RepNeXt

    defaults = inspect.signature(RepNeXt).parameters
    for key, node in iter_config_dicts(cfg.get('model'), 'model'):
        if node.get('type') not in REPNEXT_TYPES or not key.endswith('.backbone'):
            continue
        out_indices = node.get('out_indices', defaults['out_indices'].default)
        try:
            widths = RepNeXt.parse_arch(node.get('arch', defaults['arch'].default))['widths']
            channels = [widths[i] for i in RepNeXt.parse_out_indices(out_indices)]
        except ValueError:  # RepNeXt names the bad value itself when it is built
            continue
        owner_key = key[:-len('.backbone')]
        owner = lookup_key(cfg, owner_key.split('.'))
        arch = node.get('arch', defaults['arch'].default)
        arch = repr(arch) if isinstance(arch, str) else f'widths {list(widths)}'
        gives = (f'{key}.out_indices={out_indices!r} (arch {arch}) gives {len(channels)} feature '
                 f'map{"s" if len(channels) > 1 else ""} with channels {channels}')
        neck_key, neck = _first_neck(owner, f'{owner_key}.neck')
        if isinstance(neck, Mapping) and isinstance(neck.get('in_channels'), (list, tuple)):
            expected = list(neck['in_channels'])
            if expected != channels:
                what = (f'expects {len(expected)}' if len(expected) != len(channels)
                        else 'expects those channels')
                raise InputError(f'{gives}, but {neck_key}.in_channels={expected} {what}; make '
                                 f'them agree, e.g. {neck_key}.in_channels={channels}')
        head = owner.get('head') if isinstance(owner, Mapping) else None
        if (isinstance(neck, Mapping) and neck.get('type') in POOLING_NECKS
                and isinstance(head, Mapping) and isinstance(head.get('in_channels'), int)
                and head['in_channels'] != channels[-1]):
            raise InputError(f'{gives}, the last pooled for the head, but '
                             f'{owner_key}.head.in_channels={head["in_channels"]}; make them '
                             f'agree, e.g. {owner_key}.head.in_channels={channels[-1]}')


def _first_neck(owner: Any, key: str) -> tuple[str, Any]:
    """The neck that receives the backbone's maps (the first of a list of necks) and its key."""
    neck = owner.get('neck') if isinstance(owner, Mapping) else None
    if isinstance(neck, (list, tuple)):
        return (f'{key}.0', neck[0]) if neck else (key, None)
    return key, neck
