"""The model zoo by name: ``model-index.yml`` read back, and registered with mmpretrain.

Every config of the zoo is a model named after its file (``mask_rcnn_repnext_m0_fpn_shapes``,
``repnext_m4_8xb256_in1k_distill``), listed in ``model-index.yml`` with its config and the
authors' weights where they were released (:mod:`.metafiles` writes the files). Here the names
become usable:

* :func:`config_path` / :func:`find_model`: a name -> the config file of the installed package
  (``repnext_mm/.mim/configs/...`` in a wheel; in an editable install ``.mim`` links to the
  checkout, and a checkout run with ``PYTHONPATH=.`` reads its own ``configs/``);
* :func:`register_mmpretrain_models`: the classifiers in mmpretrain's model hub
  (``ModelHub.register_model_index``), so that after ``import repnext_mm``
  ``mmpretrain.get_model(name)``, ``mmpretrain.list_models('*repnext*')`` and
  ``ImageClassificationInferencer(name)`` know them. ``import repnext_mm`` calls it when
  mmpretrain is installed.

mmdet's ``DetInferencer`` and mmseg's ``MMSegInferencer`` resolve names only in their own
package's ``.mim`` (MMEngine's ``BaseInferencer._load_model_from_metafile``, fixed to a scope of
``MODULE2PACKAGE``): they offer no hook for a plugin's model index, so they take the config
path, e.g. ``DetInferencer(model=str(config_path('mask_rcnn_repnext_m0_fpn_shapes')),
weights=...)``.
"""
from __future__ import annotations

import difflib
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

from repnext_mm.utils.errors import InputError

MODEL_INDEX = 'model-index.yml'
#: The library folders of ``configs/`` (the metafiles' order in ``model-index.yml``).
LIBRARIES = ('mmpretrain', 'mmdet', 'mmseg')
#: The library whose model hub takes a plugin's model index.
HUB_LIBRARY = 'mmpretrain'
#: How many close names an unknown name's error suggests.
SUGGESTIONS = 3


@dataclass(frozen=True)
class ZooModel:
    """One entry of ``model-index.yml``.

    Attributes:
        name: The model name (the config's file name without ``.py``).
        library: ``'mmpretrain'``, ``'mmdet'`` or ``'mmseg'`` (its folder under ``configs/``).
        config: The config file in the zoo root (:func:`zoo_root`).
        weights: The authors' released weights (a URL) or ``None``.
    """

    name: str
    library: str
    config: Path
    weights: str | None


def package_dir() -> Path:
    """The folder of the installed ``repnext_mm`` package."""
    return Path(__file__).resolve().parents[1]


def zoo_root() -> Path:
    """The folder holding ``model-index.yml`` and ``configs/`` for the installed package.

    ``repnext_mm/.mim`` in a wheel (copies) and in an editable install (links to the checkout);
    else the checkout around the package (``PYTHONPATH=.`` without an install).

    Raises:
        InputError: Neither holds a model index (a broken install).
    """
    package = package_dir()
    for root in (package / '.mim', package.parent):
        if (root / MODEL_INDEX).is_file() and (root / 'configs').is_dir():
            return root
    raise InputError(f'no {MODEL_INDEX} with configs/ in {package / ".mim"} or {package.parent}: '
                     'the package was installed without its model zoo; reinstall it '
                     '(pip install -e . in the checkout, or the wheel)')


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding='utf-8'))
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f'cannot read {path}: {error}; regenerate the zoo files with '
                         'python tools/misc/gen_metafiles.py') from error
    if not isinstance(document, dict):
        raise InputError(f'{path} is not a model index or metafile (no mapping); regenerate it '
                         'with python tools/misc/gen_metafiles.py')
    return document


def metafile_paths(root: Path) -> dict[str, Path]:
    """``{library: metafile}`` of every metafile ``root/model-index.yml`` imports."""
    paths = {}
    for relative in _read_yaml(root / MODEL_INDEX).get('Import') or []:
        library = Path(relative).parent.name
        if library not in LIBRARIES:
            raise InputError(f'{root / MODEL_INDEX} imports {relative}, which is not under '
                             f'configs/{{{",".join(LIBRARIES)}}}/; regenerate it with '
                             'python tools/misc/gen_metafiles.py')
        paths[library] = root / relative
    return paths


def _first_weights(weights: str | list | None) -> str | None:
    # modelindex allows a list of weights; mmpretrain and MMEngine take the first.
    return weights[0] if isinstance(weights, list) and weights else weights or None


@functools.lru_cache(maxsize=4)
def _zoo_models(root: Path) -> dict[str, ZooModel]:
    models: dict[str, ZooModel] = {}
    for library, metafile in metafile_paths(root).items():
        for entry in _read_yaml(metafile).get('Models') or []:
            name = str(entry['Name']).lower()
            models[name] = ZooModel(name=name, library=library, config=root / entry['Config'],
                                    weights=_first_weights(entry.get('Weights')))
    return models


def zoo_models(root: Path | None = None) -> dict[str, ZooModel]:
    """``{name: model}`` of every model of ``root/model-index.yml`` (default :func:`zoo_root`)."""
    return dict(_zoo_models(Path(root) if root is not None else zoo_root()))


def close_names(name: str, candidates: list[str] | set[str]) -> list[str]:
    """The names among ``candidates`` closest to ``name`` (for "did you mean")."""
    return difflib.get_close_matches(name.lower(), sorted(candidates), n=SUGGESTIONS, cutoff=0.5)


def did_you_mean(name: str, candidates: list[str] | set[str]) -> str:
    """``'; did you mean a, b?'`` or ``''`` when nothing is close."""
    close = close_names(name, candidates)
    return f'; did you mean {", ".join(close)}?' if close else ''


def find_model(name: str, root: Path | None = None) -> ZooModel:
    """The zoo model called ``name`` (case-insensitive; a trailing ``.py`` is ignored).

    Raises:
        InputError: No model of the zoo has that name (the message suggests close ones).
    """
    key = Path(name).name.removesuffix('.py').lower()
    models = zoo_models(root)
    if key not in models:
        raise InputError(f'{name!r} is not a model of the repnext_mm zoo (model-index.yml: '
                         'the config files\' names, e.g. mask_rcnn_repnext_m0_fpn_shapes)'
                         f'{did_you_mean(key, set(models))}')
    return models[key]


def config_path(name: str, root: Path | None = None) -> Path:
    """The config file of the zoo model ``name`` in the installed package.

    For the Inferencers of mmdet and mmseg, which name only their own models::

        DetInferencer(model=str(config_path('mask_rcnn_repnext_m0_fpn_shapes')), weights=...)

    Raises:
        InputError: ``name`` is not a zoo model, or its config is missing from the install.
    """
    model = find_model(name, root)
    if not model.config.is_file():
        raise InputError(f'{model.config} (the config of {model.name}) is missing: the install '
                         'is incomplete; reinstall the package')
    return model.config


# --------------------------------------------------------------------------------------------
# mmpretrain's model hub
# --------------------------------------------------------------------------------------------
def register_mmpretrain_models(root: Path | None = None) -> list[str]:
    """Registers the zoo's classifiers with mmpretrain's ``ModelHub`` (idempotent).

    The mmpretrain metafile of ``model-index.yml`` goes to
    ``ModelHub.register_model_index(metafile, config_prefix=root)``: mmpretrain joins each
    entry's ``Config`` (``configs/mmpretrain/...``) to the zoo root, loads the config when the
    model is asked for and takes ``Weights`` as ``pretrained=True``. The detectors and
    segmentors stay out: mmpretrain would build them in its own scope.

    Args:
        root: The zoo root (default :func:`zoo_root`).

    Returns:
        The names registered by this call: all the classifiers the first time, ``[]`` after
        (or without mmpretrain, or when another package already took one of the names, which
        is warned about and leaves mmpretrain's hub unchanged).
    """
    try:
        from mmpretrain.apis import ModelHub
    except ImportError:  # mmpretrain is optional
        return []
    try:
        root = Path(root) if root is not None else zoo_root()
        metafile = metafile_paths(root).get(HUB_LIBRARY)
        names = [m.name for m in zoo_models(root).values() if m.library == HUB_LIBRARY]
    except InputError as error:
        warnings.warn(f'repnext_mm models are not registered with mmpretrain: {error}')
        return []
    taken = [name for name in names if ModelHub.has(name)]
    if metafile is None or not names:
        return []
    if _all_ours(ModelHub, taken, names, root):
        install_strict_get_model(names)  # idempotent
        return []
    if taken:
        warnings.warn(f'repnext_mm models are not registered with mmpretrain: the names '
                      f'{", ".join(taken)} are taken by other models of its hub')
        return []
    ModelHub.register_model_index(metafile, config_prefix=root)
    install_strict_get_model(names)
    return names


def _all_ours(hub: type, taken: list[str], names: list[str], root: Path) -> bool:
    """Whether every name is registered already, from this zoo (a repeated registration)."""
    if len(taken) != len(names):
        return False
    configs = {m.name: m.config for m in zoo_models(root).values()}
    return all(_same_file(hub._models_dict[name].config, configs[name]) for name in names)


def _same_file(registered: object, config: Path) -> bool:
    # ModelHub stores the joined path until the model is first asked for, then a Config.
    path = getattr(registered, 'filename', registered)
    try:
        return Path(str(path)).resolve() == config.resolve()
    except (OSError, TypeError):
        return False


# --------------------------------------------------------------------------------------------
# Loading our models' weights in mmpretrain.get_model: strictly, the authors' files converted
# --------------------------------------------------------------------------------------------
#: The zoo names whose ``get_model`` loads strictly (filled by :func:`install_strict_get_model`).
_STRICT_NAMES: set[str] = set()


def install_strict_get_model(names: list[str]) -> None:
    """Makes ``mmpretrain.get_model(name, pretrained=...)`` (and the Inferencers built by name)
    load the weights of the zoo's ``names`` strictly (:func:`load_zoo_weights`).

    mmpretrain loads with MMEngine's ``load_checkpoint(strict=False)``: a detector's or a
    ResNet's checkpoint "loads" with a warning and the model keeps random weights, and the
    authors' files fail inside ``torch.load``. Other models keep mmpretrain's behaviour. The
    function is replaced where mmpretrain's modules hold it (``mmpretrain.get_model``,
    ``mmpretrain.apis``, the Inferencers' base); idempotent.
    """
    import sys

    from mmpretrain.apis import model as model_module

    _STRICT_NAMES.update(names)
    original = getattr(model_module.get_model, '__wrapped__', model_module.get_model)
    if getattr(model_module.get_model, '_repnext_strict', False):
        return
    strict = _strict_get_model(original)
    for module in list(sys.modules.values()):
        if getattr(module, '__name__', '').startswith('mmpretrain') and \
                getattr(module, 'get_model', None) is original:
            module.get_model = strict


def _strict_get_model(original):
    @functools.wraps(original)
    def get_model(model, pretrained=False, device=None, device_map=None, offload_folder=None,
                  url_mapping=None, **kwargs):
        name = model.lower() if isinstance(model, str) else None
        if name not in _STRICT_NAMES or pretrained is False or pretrained is None:
            return original(model, pretrained, device=device, device_map=device_map,
                            offload_folder=offload_folder, url_mapping=url_mapping, **kwargs)
        weights = zoo_models()[name].weights if pretrained is True else str(pretrained)
        if weights is None:
            raise InputError(f'{name} has no published weights; pass pretrained=PATH (a '
                             'checkpoint of its config) or pretrained=False for random weights')
        if url_mapping is not None:
            import re
            weights = re.sub(url_mapping[0], url_mapping[1], weights)
        built = original(model, False, **kwargs)
        dataset_meta = load_zoo_weights(built, weights, name)
        if dataset_meta:
            built._dataset_meta = dataset_meta
        if device_map is not None:
            from mmpretrain.apis.utils import dispatch_model
            built = dispatch_model(built, device_map=device_map, offload_folder=offload_folder)
        elif device is not None:
            built.to(device)
        return built.eval()

    get_model._repnext_strict = True
    return get_model


def load_zoo_weights(model, weights: str, name: str) -> dict:
    """Loads ``weights`` (a file or an address) into the zoo model ``name``, every entry.

    A checkpoint of this package (``tools/train.py``, the deploy tools, a release address,
    which comes converted) is read safely; a local copy of one of the authors' files is
    converted as its address would be. The loading is
    :func:`~repnext_mm.apis.checkpoint.load_state_dict_checked`'s.

    Returns:
        The checkpoint's ``dataset_meta`` (``{}`` if it records none).

    Raises:
        InputError: Unreadable, not a checkpoint, or weights that do not fit the model.
    """
    from repnext_mm.apis.checkpoint import (is_torchscript, load_state_dict_checked,
                                            looks_fused, read_checkpoint, state_dict_of)
    from repnext_mm.apis.inputs import is_local_path
    from repnext_mm.deploy.convert.keys import AUTHOR_STEM_KEY

    local = is_local_path(weights)
    checkpoint = None if local and is_torchscript(weights) else read_checkpoint(weights)
    state_dict = state_dict_of(checkpoint, weights) if checkpoint is not None else {}
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if local and (checkpoint is None or AUTHOR_STEM_KEY in state_dict):
        from repnext_mm.deploy.convert.official import convert_source
        from repnext_mm.deploy.convert.source import read_source

        source = read_source(weights)
        state_dict = convert_source(source, 'model').state_dict
        meta = dict(dataset_meta=dict(classes=tuple(source.info['classes']))) \
            if 'classes' in source.info else None
    hint = (f'Pass weights of {name} (trained with its config), or the zoo name of the model '
            'they belong to.')
    if looks_fused(state_dict) and not looks_fused(model.state_dict()):
        hint = (f'They are fused (deploy) weights: build the fused model with '
                f"get_model('{name}', pretrained=..., backbone=dict(deploy=True), "
                'head=dict(deploy=True)).')
    load_state_dict_checked(model, state_dict, weights, hint=hint)
    dataset_meta = meta.get('dataset_meta') if isinstance(meta, dict) else None
    return dict(dataset_meta) if isinstance(dataset_meta, dict) else {}
