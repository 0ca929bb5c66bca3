"""Run a detector, segmentor or classifier on images and write the pictures (``tools/infer.py``).

The model is a config file, a model of the repnext_mm zoo (``model-index.yml``: the config
files' names) or, for classifiers, any mmpretrain model name. The config's ``default_scope``
picks the library's own Inferencer, which writes under ``out_dir``:

* mmdet, ``DetInferencer``: ``vis/<image>`` with the boxes and masks scoring at least
  ``pred_score_thr``; ``preds/<stem>.json``;
* mmseg, ``MMSegInferencer``: ``vis/<image>`` with the mask blended in; ``preds/<stem>.png``, the
  class index of every pixel;
* mmpretrain, ``ImageClassificationInferencer``: ``vis/<stem>.png`` with the class drawn;
  ``preds/<stem>.json``.

Weights: ``weights`` (a file or an address), else the ones the zoo or mmpretrain publishes for
the name (the authors' release addresses are downloaded once and converted by the loader
:mod:`repnext_mm.hub.weights` registers with MMEngine). They are read safely
(:func:`repnext_mm.apis.checkpoint.read_checkpoint`); a fused checkpoint
(``tools/deploy/reparameterize.py``) builds the fused model; and once the Inferencer has loaded
the weights its own (lenient) way, they are loaded again strictly, so weights that do not fit
the config are an error rather than a warning in a log.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from repnext_mm.inference.images import check_out_dir, collect_images, publish
from repnext_mm.utils.errors import InputError

#: What each library's configs do here.
TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation', 'mmpretrain': 'classification'}
VIS_DIR = 'vis'
PREDS_DIR = 'preds'
WEIGHTS_HINT = ('pass --weights CHECKPOINT (a checkpoint of this config, e.g. '
                'work_dirs/<config name>/epoch_N.pth from tools/train.py)')


@dataclass(frozen=True)
class ModelChoice:
    """The model an inference runs: its config and the weights published for it.

    Attributes:
        config: The config file.
        name: The model name it was chosen by, or ``None`` for a config path.
        weights: The published weights (a URL) or ``None``.
        source: Where the name was found, for messages.
    """

    config: Path
    name: str | None = None
    weights: str | None = None
    source: str = 'config file'


@dataclass
class InferenceResult:
    """What :func:`infer` did.

    Attributes:
        task: ``'detection'``, ``'segmentation'`` or ``'classification'``.
        model: The model as chosen (:class:`ModelChoice`).
        weights: The weights it ran with (a file or a URL).
        images: The images it read.
        pictures: The written pictures (under ``out_dir/vis``).
        predictions: The written prediction files (under ``out_dir/preds``).
    """

    task: str
    model: ModelChoice
    weights: str
    images: list[Path]
    pictures: list[Path] = field(default_factory=list)
    predictions: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Model, weights and device
# --------------------------------------------------------------------------------------------
def _student_config(config: Path) -> Path:
    """The plain config of a distillation config (its checkpoints hold the student only)."""
    student = config.with_name(config.name.replace('_distill', ''))
    return student if student != config and student.is_file() else config


def _mmpretrain_names() -> list[str]:
    try:
        import mmpretrain
    except ImportError:
        return []
    return mmpretrain.list_models()


def _mmpretrain_choice(name: str) -> ModelChoice:
    from mmpretrain.apis import ModelHub

    metainfo = ModelHub.get(name)
    return ModelChoice(config=Path(metainfo.config.filename), name=name.lower(),
                       weights=metainfo.weights, source='mmpretrain model hub')


def resolve_model(model: str) -> ModelChoice:
    """A config path, a zoo name (``model-index.yml``) or an mmpretrain model name -> config.

    A zoo distillation model (``*_distill``) runs the student's config: its published weights
    are the student's.

    Raises:
        InputError: A missing config file, or a name nobody knows (with close names).
    """
    from repnext_mm.zoo.model_index import did_you_mean, zoo_models

    path = Path(model)
    if path.is_file():
        if path.suffix != '.py':
            raise InputError(f'MODEL {model} is a file but not a .py config; pass a config, a '
                             'zoo model name or an mmpretrain model name')
        return ModelChoice(config=path)
    zoo = zoo_models()
    key = path.name.removesuffix('.py').lower()
    if path.suffix == '.py' or len(path.parts) > 1:
        raise InputError(f'config file {model} does not exist (relative to {os.getcwd()})'
                         f'{did_you_mean(key, set(zoo))}')
    if key in zoo:
        entry = zoo[key]
        return ModelChoice(config=_student_config(entry.config), name=entry.name,
                           weights=entry.weights, source='repnext_mm model zoo')
    hub = _mmpretrain_names()
    if key in hub:
        return _mmpretrain_choice(key)
    raise InputError(f'unknown model {model!r}: not a config file, nor a name of the repnext_mm '
                     'zoo (model-index.yml: the config files\' names)'
                     + (' or of mmpretrain\'s model hub' if hub else '')
                     + (did_you_mean(key, set(zoo) | set(hub)) or
                        '; mmpretrain.list_models() lists the hub\'s names'))


def resolve_weights(weights: str | None, choice: ModelChoice) -> str:
    """``weights`` if given (an existing file or an address), else the model's published weights.

    Raises:
        InputError: The file does not exist, or no weights were given and none are published.
    """
    from repnext_mm.apis.inputs import is_local_path

    if weights is not None:
        if not is_local_path(weights):  # an address: read (and reported) by read_checkpoint
            return weights
        path = Path(weights)
        if path.is_dir():
            raise InputError(f'--weights {weights} is a folder; pass the checkpoint file in it')
        if not path.is_file():
            raise InputError(f'weights file {weights} does not exist (relative to '
                             f'{os.getcwd()}); {WEIGHTS_HINT}')
        return weights
    if choice.weights:
        return choice.weights
    what = f'{choice.name} has no published weights' if choice.name else \
        f'{choice.config} is a config: its weights are not known'
    raise InputError(f'{what}; {WEIGHTS_HINT}')


def resolve_device(device: str | None) -> str:
    """``device``, checked; ``None`` -> ``'cuda'`` where available, else ``'cpu'``.

    Raises:
        InputError: A CUDA device without CUDA, or a string torch cannot parse.
    """
    import torch

    if device is None:
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError) as error:
        raise InputError(f'--device {device!r} is not a device (e.g. cpu, cuda, cuda:1): '
                         f'{error}') from None
    if kind == 'cuda' and not torch.cuda.is_available():
        raise InputError(f'--device {device}: no CUDA device is available here; pass --device cpu')
    return device


def deploy_options(checkpoint: Any, state_dict: dict, cfg: Any) -> dict[str, bool]:
    """The config overrides that build the fused model for a fused checkpoint, else ``{}``."""
    from repnext_mm.apis.checkpoint import fused_checkpoint_options, looks_fused
    from repnext_mm.apis.model import build_model, deploy_cfg_options
    from repnext_mm.models.utils.reparameterize import reparameterizable_modules

    recorded = fused_checkpoint_options(checkpoint)
    if recorded:
        return recorded
    if not looks_fused(state_dict):
        return {}
    names = list(reparameterizable_modules(build_model(cfg)))
    return deploy_cfg_options(cfg.model, names)


# --------------------------------------------------------------------------------------------
# The Inferencers
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences what an Inferencer prints, logs and warns while it loads weights its lenient way
    (key mismatches, class-name fallbacks): :func:`infer` checks and completes both itself."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, 'w')) as null:
            warnings.simplefilter('ignore')
            with null:
                yield
    finally:
        logger.setLevel(level)


def build_inferencer(cfg: Any, weights: str, device: str) -> Any:
    """The library's Inferencer for ``cfg`` (its ``default_scope``), weights loaded, eval mode.

    Built quietly (:func:`_quiet`): the caller loads the weights again strictly.
    """
    with _quiet():
        return _build_inferencer(cfg, weights, device)


def _build_inferencer(cfg: Any, weights: str, device: str) -> Any:
    from mmengine.model import revert_sync_batchnorm

    scope = cfg.default_scope
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = DetInferencer(model=cfg, weights=weights, device=device)
    elif scope == 'mmseg':
        from mmseg.apis import MMSegInferencer
        inferencer = MMSegInferencer(model=cfg, weights=weights, device=device)
    else:
        from mmpretrain.apis import ImageClassificationInferencer
        inferencer = ImageClassificationInferencer(model=cfg, pretrained=weights, device=device)
    # SyncBN (the multi-GPU configs) has no single-process kernel; plain BN has the same weights.
    inferencer.model = revert_sync_batchnorm(inferencer.model).eval()
    return inferencer


def config_dataset_meta(cfg: Any) -> dict:
    """Classes (and palette) of the config's test data set: its ``metainfo``, else the data set
    class's ``METAINFO`` (what mmpretrain's ``get_model`` falls back to)."""
    from mmengine.registry import DATASETS

    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    meta = {str(k).lower(): v for k, v in dict(dataset.get('metainfo') or {}).items()}
    if 'classes' not in meta and dataset.get('type'):
        with DATASETS.switch_scope_and_registry(cfg.default_scope) as registry:
            dataset_class = registry.get(dataset['type'])
        meta = {str(k).lower(): v for k, v in getattr(dataset_class, 'METAINFO', {}).items()}
    return meta


def _palette(count: int) -> list[list[int]]:
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, size=(count, 3)).tolist()


def complete_dataset_meta(inferencer: Any, cfg: Any, checkpoint: dict) -> None:
    """Class names and colours for the pictures of a detector or segmentor.

    The Inferencers take them from the checkpoint's ``meta`` and otherwise fall back to COCO
    (mmdet) or Cityscapes (mmseg) whatever the model predicts; here the config's test data set
    fills what the checkpoint lacks, and a palette that does not match the classes (mmseg
    refuses to draw) is replaced: the config's, or fixed generated colours.
    """
    meta = inferencer.model.dataset_meta
    saved = (checkpoint.get('meta') or {}).get('dataset_meta') or {}
    from_config = None
    if not saved.get('classes'):
        from_config = config_dataset_meta(cfg)
        if from_config.get('classes'):
            meta['classes'] = from_config['classes']
    classes, palette = meta.get('classes'), meta.get('palette')
    if cfg.default_scope == 'mmseg' and classes and (not palette or len(palette) != len(classes)):
        from_config = config_dataset_meta(cfg) if from_config is None else from_config
        palette = from_config.get('palette')
        meta['palette'] = list(palette) if palette and len(palette) == len(classes) \
            else _palette(len(classes))
    if cfg.default_scope == 'mmdet':
        inferencer.visualizer.dataset_meta = meta


def _run_mmdet(inferencer: Any, images: list[str], staging: Path, batch_size: int,
               pred_score_thr: float) -> None:
    inferencer(images, batch_size=batch_size, out_dir=str(staging), no_save_pred=False,
               pred_score_thr=pred_score_thr)


def _run_mmseg(inferencer: Any, images: list[str], staging: Path, batch_size: int,
               pred_score_thr: float) -> None:
    inferencer(images, batch_size=batch_size, out_dir=str(staging), img_out_dir=VIS_DIR,
               pred_out_dir='pred')
    # mmseg numbers its label maps (00000000_pred.png, ...) in input order: name them after
    # the images, as the pictures are.
    labels = sorted((staging / 'pred').glob('*_pred.png'))
    if len(labels) == len(images):
        (staging / PREDS_DIR).mkdir()
        for label, image in zip(labels, images):
            label.rename(staging / PREDS_DIR / f'{Path(image).stem}.png')


def _run_mmpretrain(inferencer: Any, images: list[str], staging: Path, batch_size: int,
                    pred_score_thr: float) -> None:
    results = inferencer(images, batch_size=batch_size, show_dir=str(staging / VIS_DIR))
    (staging / PREDS_DIR).mkdir()
    for image, result in zip(images, results):
        record = {key: value.tolist() if hasattr(value, 'tolist') else value
                  for key, value in result.items()}
        (staging / PREDS_DIR / f'{Path(image).stem}.json').write_text(
            json.dumps(record, indent=2) + '\n', encoding='utf-8')


RUNNERS: dict[str, Callable[..., None]] = {
    'mmdet': _run_mmdet, 'mmseg': _run_mmseg, 'mmpretrain': _run_mmpretrain}


def _check_numbers(batch_size: int, pred_score_thr: float) -> None:
    if batch_size < 1:
        raise InputError(f'--batch-size {batch_size}: pass 1 or more')
    if not 0.0 <= pred_score_thr <= 1.0:
        raise InputError(f'--pred-score-thr {pred_score_thr}: pass a score between 0 and 1')


def infer(inputs: str | os.PathLike, model: str, weights: str | None = None,
          out_dir: str | os.PathLike = 'outputs', device: str | None = None,
          pred_score_thr: float = 0.3, batch_size: int = 1) -> InferenceResult:
    """Runs ``model`` on an image or a folder of images; writes pictures and predictions.

    Every input is checked before anything is built, and the outputs appear in ``out_dir``
    only once the whole run succeeded (each file atomically).

    Args:
        inputs: An image, or a folder whose images (not its subfolders') are read.
        model: A config file, a zoo model name or an mmpretrain model name.
        weights: A checkpoint file or URL; default: the model's published weights.
        out_dir: Output folder (created; existing files of the same names are replaced).
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``...; default: CUDA where available.
        pred_score_thr: Detection only: the lowest score drawn.
        batch_size: Images per forward pass.

    Returns:
        What was run and written.

    Raises:
        InputError: Missing or empty inputs, an unknown model, missing or unfitting weights,
            an output folder that is a file, a bad device or number.
    """
    from mmengine.registry import DefaultScope

    from repnext_mm.apis.checkpoint import load_state_dict_checked, read_checkpoint, state_dict_of
    from repnext_mm.apis.model import load_model_config

    images = collect_images(inputs)
    out_dir = check_out_dir(out_dir)
    _check_numbers(batch_size, pred_score_thr)
    choice = resolve_model(model)
    weights = resolve_weights(weights, choice)
    device = resolve_device(device)

    cfg = load_model_config(choice.config)
    checkpoint = read_checkpoint(weights)  # an address through MMEngine's loaders (cached)
    state_dict = state_dict_of(checkpoint, weights)
    options = deploy_options(checkpoint, state_dict, cfg)
    if options:
        cfg.merge_from_dict(options)
    # The library's registries, whatever scope the process was in (mmpretrain's Inferencer
    # builds its pipeline in the current one).
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        inferencer = build_inferencer(cfg, weights, device)
        load_state_dict_checked(inferencer.model, state_dict, weights)
        if cfg.default_scope != 'mmpretrain':
            complete_dataset_meta(inferencer, cfg, checkpoint)
        with tempfile.TemporaryDirectory(prefix='repnext_infer_') as staging:
            RUNNERS[cfg.default_scope](inferencer, [str(p) for p in images], Path(staging),
                                       batch_size, pred_score_thr)
            written = publish(Path(staging), out_dir)

    result = InferenceResult(task=TASKS[cfg.default_scope], model=choice, weights=weights,
                             images=images)
    result.pictures = [p for p in written if p.parent == out_dir / VIS_DIR]
    result.predictions = [p for p in written if p.parent == out_dir / PREDS_DIR]
    return result
