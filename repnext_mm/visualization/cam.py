"""Grad-CAM class activation maps for RepNeXt classifiers, detectors, segmentors and backbones.

Built on the ``grad-cam`` package (``pytorch_grad_cam``), as mmpretrain's ``vis_cam.py`` is, with
what a RepNeXt model needs on top:

* **Target layers by name** (``backbone.stages.3``), resolved with an error that lists the valid
  names. The stage and block names are the same in the training form and in the fused (deploy)
  form, so the same command works on a training checkpoint, on a fused checkpoint written by
  ``tools/deploy/reparameterize.py``, and with ``fuse=True``. The default is the output of the
  last backbone stage (mmpretrain's default, "the last norm layer", does not exist in the fused
  form, which holds no BatchNorm).
* **A score for every task.** Classifiers: the logit of a class (by default the predicted one).
  Detectors, segmentors and bare backbones have no class score; the score is computed on the
  backbone's **deepest output feature map** F (the last stage with the default ``out_indices``):
  by default its *energy* ``mean(F ** 2)`` ("which regions make the backbone respond
  strongly"), or with ``feature_score='mean'`` its plain mean; ``category=N`` restricts either
  to channel ``N``. The energy is the default because RepNeXt features are signed (residual
  sums of BatchNorm outputs): their plain mean is often negative, and Grad-CAM, which keeps only
  positive evidence, then returns an empty map. With the energy the map of the deepest layer
  itself is ``ReLU(sum_c mean(F_c) * F_c)``, whose total is never negative.
* **Whole-image maps.** The image is resized (not cropped) to the model input size, so the map
  covers the whole image and is resized back onto the original pixels for the overlay.

Example:
    >>> visualizer = CAMVisualizer.from_config('configs/mmpretrain/repnext_m0_shapes.py', 'ckpt.pth')
    >>> result = visualizer.compute(load_image('image.png'), target_layers=['backbone.stages.2'])
    >>> save_image(overlay(load_image('image.png'), result.cam), 'cam.png')
"""
from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from repnext_mm.models.input_sizes import CLASSIFIER_INPUT_SIZE
from repnext_mm.utils.errors import InputError
from repnext_mm.utils.fileio import IMAGE_SUFFIXES, atomic_write_bytes
from repnext_mm.utils.imports import require

#: Detectors / segmentors / backbones: the image keeps its aspect ratio and is shrunk (never
#: enlarged) to fit mmdet's test scale, long edge <= 1333 and short edge <= 800 ...
MAX_LONG_EDGE, MAX_SHORT_EDGE = 1333, 800
#: ... then rounded up to a multiple of the backbone's total stride, so every stage sees whole
#: pixels (as mmdet / mmseg pad their inputs to a multiple of 32).
SIZE_DIVISOR = 32

# grad-cam classes offered by name. Only methods that work on any 4-D feature map with the
# targets used here; FullGrad (needs every layer's bias gradients), ShapleyCAM / FinerCAM (need
# second-order or paired targets) and the like are left out on purpose.
_METHOD_CLASSES = {
    'gradcam': 'GradCAM',
    'gradcam++': 'GradCAMPlusPlus',
    'hirescam': 'HiResCAM',
    'xgradcam': 'XGradCAM',
    'layercam': 'LayerCAM',
    'gradcamelementwise': 'GradCAMElementWise',
    'eigencam': 'EigenCAM',
    'eigengradcam': 'EigenGradCAM',
    'scorecam': 'ScoreCAM',
    'ablationcam': 'AblationCAM',
}
#: Method names accepted by :meth:`CAMVisualizer.compute` (case-insensitive).
METHODS: tuple[str, ...] = tuple(_METHOD_CLASSES)


class CAMError(InputError):
    """A problem with the inputs of a CAM computation (layer name, category, image, method).

    A :class:`~repnext_mm.utils.errors.InputError`, so the tools report it like the model
    loading errors they share: one ``error:`` line naming the problem and the fix.
    """


def cam_method_class(method: str) -> type:
    """The ``pytorch_grad_cam`` class for a method name such as ``'gradcam++'``."""
    key = method.lower().replace('-', '').replace('_', '')
    aliases = {'gradcamplusplus': 'gradcam++', 'gradcampp': 'gradcam++'}
    key = aliases.get(key, key)
    if key not in _METHOD_CLASSES:
        raise CAMError(f'unknown CAM method {method!r}; choose one of {", ".join(METHODS)}')
    return getattr(require('pytorch_grad_cam', 'Grad-CAM', CAMError), _METHOD_CLASSES[key])


# ------------------------------------------------------------------------------------------
# Target layers
# ------------------------------------------------------------------------------------------
def backbone_prefix(model: nn.Module) -> str:
    """``'backbone.'`` for a classifier / detector / segmentor, ``''`` for a bare backbone."""
    return 'backbone.' if isinstance(getattr(model, 'backbone', None), nn.Module) else ''


def default_target_layers(model: nn.Module) -> list[str]:
    """The last backbone stage, e.g. ``['backbone.stages.3']`` (valid in both forms)."""
    prefix = backbone_prefix(model)
    backbone = model.get_submodule(prefix[:-1]) if prefix else model
    stages = getattr(backbone, 'stages', None)
    if not isinstance(stages, nn.ModuleList) or len(stages) == 0:
        raise CAMError(f'{type(backbone).__name__} has no "stages" list, so there is no default '
                       'target layer; name one with --target-layers (see --list-layers)')
    return [f'{prefix}stages.{len(stages) - 1}']


def _index_range(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f'{names[0]} .. {names[-1]}'


def feature_layer_summary(model: nn.Module) -> list[str]:
    """Compact list of the RepNeXt modules that output feature maps, for error messages.

    Consecutive indices are collapsed: ``backbone.stages.2.blocks.0 .. backbone.stages.2.blocks.8``.
    """
    prefix = backbone_prefix(model)
    backbone = model.get_submodule(prefix[:-1]) if prefix else model
    lines = []
    if isinstance(getattr(backbone, 'stem', None), nn.Module):
        lines.append(f'{prefix}stem')
    stages = getattr(backbone, 'stages', None)
    if isinstance(stages, nn.ModuleList):
        lines.append(_index_range([f'{prefix}stages.{i}' for i in range(len(stages))]))
        downsamples = [f'{prefix}stages.{i}.downsample' for i, stage in enumerate(stages)
                       if not isinstance(getattr(stage, 'downsample', None), (nn.Identity, type(None)))]
        if downsamples:
            lines.append(_index_range(downsamples))
        for i, stage in enumerate(stages):
            blocks = getattr(stage, 'blocks', None)
            if isinstance(blocks, nn.Sequential) and len(blocks):
                lines.append(_index_range([f'{prefix}stages.{i}.blocks.{j}' for j in range(len(blocks))]))
    return lines


def resolve_target_layers(model: nn.Module, names: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """Looks up target layers by qualified module name.

    A name that is not found at the top level is also tried under ``backbone.``, so
    ``stages.3`` means ``backbone.stages.3`` for a classifier, detector or segmentor.

    Args:
        model: The model the CAM is computed on.
        names: Qualified module names, e.g. ``['backbone.stages.3']``.

    Returns:
        ``(qualified name, module)`` pairs in the order given.

    Raises:
        CAMError: A name matches no module; the message lists the valid feature-map layers and
            the closest existing names.
    """
    if not names:
        raise CAMError('no target layer given; name at least one, e.g. backbone.stages.3')
    modules = dict(model.named_modules())
    prefix = backbone_prefix(model)
    resolved = []
    for name in names:
        for candidate in (name, prefix + name):
            if candidate and candidate in modules:
                resolved.append((candidate, modules[candidate]))
                break
        else:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.6)
            hint = f' Closest names: {", ".join(close)}.' if close else ''
            valid = '\n  '.join(feature_layer_summary(model))
            raise CAMError(
                f'target layer {name!r} is not a module of this {type(model).__name__}.{hint}\n'
                f'Feature-map layers (the same in the training and the fused form):\n  {valid}\n'
                'Layers inside a block differ between the forms (the fused form has no norm '
                'layers or SRP branches); --list-layers prints every module name.')
    return resolved


def all_layer_names(model: nn.Module) -> list[str]:
    """``'name (Type)'`` for every named module, for ``--list-layers``."""
    return [f'{name} ({type(module).__name__})' for name, module in model.named_modules() if name]


# ------------------------------------------------------------------------------------------
# Scores
# ------------------------------------------------------------------------------------------
class ClassifierLogits(nn.Module):
    """``image -> logits`` of an mmpretrain ``ImageClassifier`` (its ``mode='tensor'``)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, inputs: Tensor) -> Tensor:
        return self.classifier(inputs, mode='tensor')


class BackboneFeatures(nn.Module):
    """``image -> deepest backbone feature map (N, C, H, W)`` (the last entry of its outputs)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, inputs: Tensor) -> Tensor:
        outputs = self.backbone(inputs)
        return outputs[-1] if isinstance(outputs, (list, tuple)) else outputs


#: Scores of a feature map (see the module docstring).
FEATURE_SCORES = ('energy', 'mean')


class FeatureTarget:
    """Grad-CAM target for a feature map: ``mean(F ** 2)`` or ``mean(F)``, of all channels or
    of channel ``channel``.

    Called by ``pytorch_grad_cam`` with one sample's output ``(C, H, W)``.

    Args:
        score: ``'energy'`` or ``'mean'``.
        channel: Restrict the score to this channel (``None``: all channels).
    """

    def __init__(self, score: str = 'energy', channel: int | None = None) -> None:
        if score not in FEATURE_SCORES:
            raise CAMError(f'feature score must be one of {FEATURE_SCORES}, got {score!r}')
        self.score = score
        self.channel = channel

    def __call__(self, output: Tensor) -> Tensor:
        feature = output if self.channel is None else output[self.channel]
        return feature.pow(2).mean() if self.score == 'energy' else feature.mean()

    def describe(self) -> str:
        part = 'the deepest backbone output' if self.channel is None else \
            f'channel {self.channel} of the deepest backbone output'
        return f'{self.score} of {part}'


@dataclass
class CAMResult:
    """One class activation map.

    Attributes:
        cam: The map at the original image size, ``float32 (H, W)`` scaled to ``[0, 1]``.
        empty: Grad-CAM found no positive evidence for the target: every weighted activation
            was <= 0, so the map is all zeros (try another layer, category or method).
        target_layers: Qualified names of the layers the map was computed on.
        method: Grad-CAM method name.
        target: What was explained, e.g. ``'class 2'`` or
            ``'energy of the deepest backbone output'``.
        category: The explained class (classifiers: the predicted one unless chosen) or feature
            channel (``None``: all channels).
        score: Value of the explained score for this image (a logit or a feature score).
        input_size: ``(height, width)`` the image was resized to for the model.
        probabilities: Softmax of the logits (classifiers only).
    """
    cam: np.ndarray
    empty: bool
    target_layers: list[str]
    method: str
    target: str
    category: int | None
    score: float
    input_size: tuple[int, int]
    probabilities: np.ndarray | None = field(default=None, repr=False)


# ------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------
class UnreadableImageError(CAMError):
    """An image file that is missing or that OpenCV cannot decode.

    Attributes:
        path: The image file.
        reason: What is wrong with it, without the path (for "skipped PATH: REASON" lines).
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f'image {path} {reason}; pass a PNG, JPEG, BMP or TIFF file')
        self.path = path
        self.reason = reason


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image as ``uint8 (H, W, 3)`` BGR (grayscale is expanded, alpha dropped).

    Raises:
        UnreadableImageError: The file does not exist or OpenCV cannot decode it.
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableImageError(path, 'does not exist')
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UnreadableImageError(path, 'cannot be decoded by OpenCV (not an image, or a '
                                         'damaged file)')
    return image


def overlay(image_bgr: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """The CAM as a JET heat map blended over the image (``uint8 (H, W, 3)`` BGR).

    Args:
        image_bgr: ``uint8 (H, W, 3)`` image.
        cam: ``(H, W)`` map in ``[0, 1]``; resized to the image if its size differs.
        image_weight: Weight of the image in the blend (``1 - image_weight`` for the heat map).
    """
    if not 0.0 <= image_weight <= 1.0:
        raise CAMError(f'image_weight must be in [0, 1], got {image_weight}')
    image_utils = require('pytorch_grad_cam.utils.image', 'Grad-CAM', CAMError)

    height, width = image_bgr.shape[:2]
    if cam.shape != (height, width):
        cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    cam = np.clip(cam, 0.0, 1.0).astype(np.float32)
    # BGR image with the BGR heat map (use_rgb=False): channel orders agree, cv2 writes it as is.
    return image_utils.show_cam_on_image(image_bgr.astype(np.float32) / 255.0, cam,
                                         use_rgb=False, image_weight=image_weight)


def check_image_output(path: str | os.PathLike) -> Path:
    """Checks that :func:`save_image` can write ``path`` (by its suffix), before any work.

    Raises:
        CAMError: The suffix is not one of :data:`IMAGE_SUFFIXES` or this OpenCV build has no
            encoder for it.
    """
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES or not cv2.haveImageWriter(str(path)):
        problem = (f'OpenCV writes no {path.suffix!r} images here' if path.suffix else
                   'the name has no suffix to choose the image format by')
        raise CAMError(f'cannot write the image {path}: {problem}; end the name in one of '
                       f'{", ".join(IMAGE_SUFFIXES)}')
    return path


def save_image(image_bgr: np.ndarray, path: str | os.PathLike) -> Path:
    """Encodes ``image_bgr`` by the file suffix (.png, .jpg, ...) and writes it atomically."""
    path = check_image_output(path)
    ok, buffer = cv2.imencode(path.suffix, image_bgr)
    if not ok:
        raise CAMError(f'OpenCV cannot encode an image as {path.suffix!r}; use .png or .jpg')
    return atomic_write_bytes(buffer.tobytes(), path)


def _pipeline_size(pipeline: Sequence[Mapping]) -> tuple[int, int] | None:
    """The final image size of an mmpretrain test pipeline ``(height, width)``, if it fixes one."""
    def hw(value: Any) -> tuple[int, int] | None:
        if isinstance(value, int):
            return (value, value)
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
            return (value[1], value[0])  # OpenMMLab transforms take (w, h)
        return None

    for transform in reversed(list(pipeline)):
        kind = str(transform.get('type', '')).split('.')[-1]
        if kind == 'CenterCrop' and hw(transform.get('crop_size')):
            return hw(transform['crop_size'])
        if kind == 'Resize' and hw(transform.get('scale')) and not transform.get('keep_ratio'):
            return hw(transform['scale'])
        if kind == 'ResizeEdge' and isinstance(transform.get('scale'), int):
            return (transform['scale'], transform['scale'])
    return None


def classifier_input_size(cfg: Any) -> tuple[int, int]:
    """Input size of a classifier config: its test pipeline's crop / resize, else 224x224."""
    pipelines = []
    try:
        pipelines.append(cfg.test_dataloader.dataset.pipeline)
    except AttributeError:
        pass
    if cfg is not None and cfg.get('test_pipeline') is not None:
        pipelines.append(cfg.test_pipeline)
    for pipeline in pipelines:
        size = _pipeline_size(pipeline)
        if size:
            return size
    return CLASSIFIER_INPUT_SIZE


def dense_input_size(image_shape: Sequence[int]) -> tuple[int, int]:
    """Input size for a detector / segmentor / backbone: the image's own aspect ratio.

    Shrunk (never enlarged) to fit long edge <= 1333 and short edge <= 800, then rounded up to
    a multiple of 32.
    """
    height, width = image_shape[:2]
    scale = min(1.0, MAX_LONG_EDGE / max(height, width), MAX_SHORT_EDGE / min(height, width))

    def round_up(value: float) -> int:
        # The small tolerance keeps an exact multiple (e.g. 800.0000001) from jumping a step.
        return max(SIZE_DIVISOR, math.ceil(value / SIZE_DIVISOR - 1e-6) * SIZE_DIVISOR)
    return round_up(height * scale), round_up(width * scale)


# ------------------------------------------------------------------------------------------
# The visualizer
# ------------------------------------------------------------------------------------------
class CAMVisualizer:
    """Computes Grad-CAM maps of one model for any number of images.

    Args:
        model: An mmpretrain classifier, mmdet detector, mmseg segmentor or bare backbone
            (training or fused form).
        task: ``'classifier'``, ``'detector'``, ``'segmentor'`` or ``'backbone'``.
        mean: Per-channel normalization mean, in the channel order the model consumes.
        std: Per-channel normalization std.
        rgb: The model consumes RGB (images are read as BGR and flipped first).
        input_size: Fixed ``(height, width)`` for the model, or ``None``: classifiers use
            224x224, the others :func:`dense_input_size` of each image.
        device: ``'cpu'`` or ``'cuda[:N]'``.
    """

    def __init__(self, model: nn.Module, task: str, mean: Sequence[float], std: Sequence[float],
                 rgb: bool = True, input_size: tuple[int, int] | None = None,
                 device: str = 'cpu') -> None:
        if task not in ('classifier', 'detector', 'segmentor', 'backbone'):
            raise CAMError(f'unsupported task {task!r}')
        if input_size is not None and min(input_size) < SIZE_DIVISOR:
            raise CAMError(f'the input size must be at least {SIZE_DIVISOR}x{SIZE_DIVISOR} (the '
                           f'last RepNeXt stage has stride 32), got {input_size[0]}x{input_size[1]}')
        if device.startswith('cuda') and not torch.cuda.is_available():
            raise CAMError(f'--device {device} was asked for but torch sees no CUDA device; use '
                           '--device cpu')
        self.task = task
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        # Gradients must reach every target layer, including frozen stages (frozen_stages in
        # detection configs turns requires_grad off) - no weight is ever updated here.
        for param in self.model.parameters():
            param.requires_grad_(True)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self.rgb = rgb
        self.input_size = input_size
        #: Things the user should know about the weights (e.g. random initialization).
        self.notes: list[str] = []
        self.scorer: nn.Module = (ClassifierLogits(self.model) if task == 'classifier' else
                                  BackboneFeatures(self.model if task == 'backbone' else self.model.backbone))

    @classmethod
    def from_config(cls, config: str | os.PathLike, checkpoint: str | os.PathLike | None,
                    fuse: bool = False, cfg_options: Mapping[str, Any] | None = None,
                    input_size: tuple[int, int] | None = None, device: str = 'cpu',
                    unsafe_full_unpickle: bool = False) -> 'CAMVisualizer':
        """Builds the config's model and loads a training or fused checkpoint.

        Args:
            config: mmpretrain / mmdet / mmseg config.
            checkpoint: Training checkpoint, fused checkpoint, or ``None`` (random weights).
            fuse: Reparameterize a training-form model before computing maps (the maps match
                the training form up to float rounding; a fused checkpoint is used as it is).
            cfg_options: Config overrides.
            input_size: ``(height, width)``; default: see :class:`CAMVisualizer`.
            device: ``'cpu'`` or ``'cuda[:N]'``.
            unsafe_full_unpickle: Unpickle arbitrary objects in the checkpoint (trusted files).
        """
        from repnext_mm.apis.model import prepare_model, preprocessing_of

        prepared = prepare_model(config, checkpoint, cfg_options, unsafe_full_unpickle)
        if prepared.training_model is None or fuse:
            model = prepared.fused()
        else:
            model = prepared.training_model
        prep = preprocessing_of(prepared.cfg)
        if input_size is None and prepared.task == 'classifier':
            input_size = classifier_input_size(prepared.cfg)
        visualizer = cls(model, prepared.task, prep.mean, prep.std, prep.color_layout == 'RGB',
                         input_size, device)
        visualizer.notes = list(prepared.notes)
        return visualizer

    def preprocess(self, image_bgr: np.ndarray) -> Tensor:
        """Resizes (no crop) and normalizes one BGR image into a ``(1, 3, H, W)`` tensor."""
        height, width = self.input_size or dense_input_size(image_bgr.shape)
        resized = cv2.resize(image_bgr, (width, height), interpolation=cv2.INTER_LINEAR)
        if self.rgb:
            resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        tensor = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None].float()
        return ((tensor - self.mean) / self.std).to(self.device)

    def _probe(self, inputs: Tensor, layers: Sequence[tuple[str, nn.Module]]
               ) -> tuple[Tensor, list[Tensor]]:
        """One forward with hooks: the score output and each target layer's output."""
        captured: dict[str, Any] = {}
        handles = [module.register_forward_hook(
            lambda _m, _i, out, name=name: captured.setdefault(name, out)) for name, module in layers]
        try:
            output = self.scorer(inputs)
        finally:
            for handle in handles:
                handle.remove()
        outs = []
        for name, _ in layers:
            if name not in captured:
                raise CAMError(f'target layer {name!r} never ran in the forward pass; pick a layer '
                               f'on the path to the score, e.g. {default_target_layers(self.model)[0]}')
            out = captured[name]
            if not isinstance(out, Tensor) or out.dim() != 4:
                kind = (f'a {type(out).__name__}' if not isinstance(out, Tensor)
                        else f'a {out.dim()}-D tensor {tuple(out.shape)}')
                raise CAMError(f'target layer {name!r} outputs {kind}, not an (N, C, H, W) feature '
                               'map; pick a backbone stage or block, e.g. '
                               f'{default_target_layers(self.model)[0]}')
            outs.append(out)
        return output, outs

    def compute(self, image_bgr: np.ndarray, target_layers: Sequence[str] | None = None,
                method: str = 'gradcam', category: int | None = None,
                feature_score: str = 'energy', eigen_smooth: bool = False,
                aug_smooth: bool = False) -> CAMResult:
        """The class activation map of one image.

        Args:
            image_bgr: ``uint8 (H, W, 3)`` BGR image (:func:`load_image`).
            target_layers: Qualified module names (default: the last backbone stage). With
                several layers the maps are averaged (``pytorch_grad_cam``'s aggregation).
            method: One of :data:`METHODS`.
            category: Classifier: the class to explain (default: the predicted class).
                Otherwise: the channel of the deepest backbone output whose score is explained
                (default: all channels).
            feature_score: Detectors, segmentors and backbones: ``'energy'`` (``mean(F ** 2)``,
                default) or ``'mean'`` of the deepest backbone output F; ignored for classifiers.
            eigen_smooth: First principal component of the weighted activations (less noise).
            aug_smooth: Average over flips and brightness changes (6x slower).

        Returns:
            The map at the image's own size and what it explains.
        """
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise CAMError(f'expected a uint8 (H, W, 3) image, got {image_bgr.dtype} '
                           f'{tuple(image_bgr.shape)}')
        cam_class = cam_method_class(method)
        if feature_score not in FEATURE_SCORES:
            raise CAMError(f'feature score must be one of {FEATURE_SCORES}, got {feature_score!r}')
        names = list(target_layers) if target_layers else default_target_layers(self.model)
        layers = resolve_target_layers(self.model, names)
        inputs = self.preprocess(image_bgr)

        output, layer_outputs = self._probe(inputs, layers)
        probabilities = None
        if self.task == 'classifier':
            num_classes = output.shape[-1]
            if category is None:
                category = int(output[0].argmax())
            elif not 0 <= category < num_classes:
                raise CAMError(f'--target-category {category} is out of range: this classifier has '
                               f'{num_classes} classes (0 .. {num_classes - 1})')
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
            target: Callable[[Tensor], Tensor] = ClassifierOutputTarget(category)
            description = f'class {category}'
            probabilities = torch.softmax(output[0].detach().float(), 0).cpu().numpy()
        else:
            channels = output.shape[1]
            if category is not None and not 0 <= category < channels:
                raise CAMError(f'--target-category {category} is out of range: for a '
                               f'{self.task} it selects a channel of the deepest backbone output, '
                               f'which has {channels} channels (0 .. {channels - 1})')
            target = FeatureTarget(feature_score, category)
            description = target.describe()
        score_value = target(output[0])
        # Gradient reachability: a layer after the deepest requested output (out_indices) or in
        # a dead branch would leave grad-cam without gradients and fail obscurely.
        if cam_class.__name__ != 'EigenCAM':  # the only method here that uses no score at all
            grads = torch.autograd.grad(score_value, layer_outputs, allow_unused=True)
            for (name, _), grad in zip(layers, grads):
                if grad is None:
                    raise CAMError(f'the score ({description}) does not depend on target layer '
                                   f'{name!r} (e.g. a stage after the deepest out_indices entry); '
                                   f'pick a layer before it, e.g. {default_target_layers(self.model)[0]}')

        cam_kwargs = {}
        if cam_class.__name__ == 'AblationCAM':
            cam_kwargs['batch_size'] = 16
        with cam_class(model=self.scorer, target_layers=[m for _, m in layers], **cam_kwargs) as cam:
            # Leaving the block removes grad-cam's hooks, so repeated calls never stack them.
            maps = self._run_cam(cam, inputs, target, eigen_smooth, aug_smooth)
        empty = bool(maps.max() <= 0)
        cam_map = maps[0].astype(np.float32)
        height, width = image_bgr.shape[:2]
        if cam_map.shape != (height, width):
            cam_map = cv2.resize(cam_map, (width, height), interpolation=cv2.INTER_LINEAR)
        return CAMResult(cam=np.clip(cam_map, 0.0, 1.0), empty=empty,
                         target_layers=[n for n, _ in layers], method=method,
                         target=description, category=category, score=float(score_value.detach()),
                         input_size=tuple(inputs.shape[-2:]), probabilities=probabilities)

    @staticmethod
    def _run_cam(cam: Any, inputs: Tensor, target: Callable, eigen_smooth: bool,
                 aug_smooth: bool) -> np.ndarray:
        try:
            return cam(input_tensor=inputs, targets=[target], eigen_smooth=eigen_smooth,
                       aug_smooth=aug_smooth)
        except IndexError as error:
            # BaseCAM.__exit__ swallows IndexError and returns None; surface it instead.
            raise CAMError(f'grad-cam failed: {error}') from error

