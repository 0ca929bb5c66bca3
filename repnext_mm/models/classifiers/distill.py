"""DeiT-style hard knowledge distillation for mmpretrain image classifiers."""
from __future__ import annotations

import copy
import os
from collections import OrderedDict

import torch
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.runner.checkpoint import CheckpointLoader
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from repnext_mm.registry import MODELS
from ..heads.repnext_head import DISTILL_LABEL
from repnext_mm.utils.state_dict import extract_state_dict

TEACHER = 'teacher'


@MODELS.register_module()
class DistillImageClassifier(ImageClassifier):
    """An :class:`ImageClassifier` trained with DeiT hard distillation from a frozen teacher.

    In ``loss()`` the teacher classifies the same (preprocessed, mixed) batch under
    ``torch.no_grad``; its argmax is stored on every data sample as ``distill_label`` (LongTensor
    of shape (1,)), and the student's head turns it into the distillation loss
    (:class:`RepNeXtClsHead`: ``0.5 * CE(head, y) + 0.5 * CE(head_dist, teacher argmax)``).
    Prediction and feature extraction are the student's alone.

    The teacher is frozen (no gradients) and stays in eval mode whatever ``train()`` says. Its
    weights are *not* written to the student's checkpoints (they would add the teacher's size,
    ~84M parameters for RegNetY-16GF, to every checkpoint): a checkpoint of this model holds
    only the student and loads into the plain ``ImageClassifier`` config. When a checkpoint is
    loaded into this model (resume), the teacher keeps the weights it already has.

    Args:
        teacher: Config of any mmpretrain model whose ``forward(inputs, mode='tensor')`` returns
            class logits (N, num_classes): an ``ImageClassifier`` or a ``TimmClassifier``.
            Built with mmpretrain's registry.
        teacher_checkpoint: Local path of the teacher's weights, loaded (strictly) by
            ``init_weights()``, i.e. when training starts; evaluation never reads it. Accepts
            MMEngine checkpoints (``state_dict``), DeiT/timm ones (``model``) and bare state
            dicts. URLs are refused: nothing is downloaded at run time.
        **kwargs: ``backbone``, ``neck``, ``head``, ``train_cfg``, ``data_preprocessor``,
            ``init_cfg`` etc. of :class:`ImageClassifier` (the student).
    """

    def __init__(self, *args, teacher: dict, teacher_checkpoint: str | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(teacher, (dict, nn.Module)):
            raise TypeError(f'teacher must be a model config dict, got {type(teacher).__name__}')
        if teacher_checkpoint is not None and '://' in str(teacher_checkpoint):
            raise ValueError(
                f'teacher_checkpoint must be a local file, got the URL {teacher_checkpoint!r}: '
                'nothing is downloaded at run time. Download it once and set '
                'model.teacher_checkpoint to its path.')
        self.teacher = (teacher if isinstance(teacher, nn.Module)
                        else MMPRETRAIN_MODELS.build(copy.deepcopy(teacher)))
        self.teacher_checkpoint = teacher_checkpoint
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self._register_state_dict_hook(_drop_teacher_from_state_dict)
        self._register_load_state_dict_pre_hook(self._keep_teacher_on_load)

    def train(self, mode: bool = True) -> 'DistillImageClassifier':
        super().train(mode)
        self.teacher.eval()  # BN statistics and dropout of the teacher stay frozen
        return self

    def init_weights(self) -> None:
        """Initializes the student as configured, then loads the teacher's checkpoint."""
        super().init_weights()
        self.load_teacher()

    def load_teacher(self) -> None:
        """Loads ``teacher_checkpoint`` into the teacher, strictly.

        Raises:
            ValueError: No checkpoint configured, or its keys do not fit the teacher.
            FileNotFoundError: The checkpoint file does not exist.
        """
        path = self.teacher_checkpoint
        if path is None:
            raise ValueError(
                'DistillImageClassifier needs trained teacher weights, but '
                'model.teacher_checkpoint is None. Set it to a local checkpoint of the teacher, '
                'e.g. --cfg-options model.teacher_checkpoint=checkpoints/regnety_160-a5fe301d.pth '
                "(DeiT's RegNetY-16GF), or train with the non-distill config.")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f'teacher checkpoint {path!r} (model.teacher_checkpoint) does not exist. Put the '
                'teacher weights there (nothing is downloaded at run time) or point '
                'model.teacher_checkpoint at them.')
        checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
        state_dict = extract_state_dict(checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state_dict, dict):
            raise ValueError(f'{path} holds no state dict (got {type(checkpoint).__name__})')
        incompatible = self.teacher.load_state_dict(state_dict, strict=False)
        missing = [k for k in incompatible.missing_keys if not k.endswith('num_batches_tracked')]
        if missing or incompatible.unexpected_keys:
            raise ValueError(
                f'{path} does not fit the teacher {type(self.teacher).__name__}: '
                f'{len(missing)} missing keys (e.g. {missing[:3]}), '
                f'{len(incompatible.unexpected_keys)} unexpected keys '
                f'(e.g. {incompatible.unexpected_keys[:3]}). Is model.teacher the architecture '
                'this checkpoint was trained with?')
        MMLogger.get_current_instance().info(
            f'loaded {len(state_dict)} teacher entries from {path}')

    @torch.no_grad()
    def teacher_labels(self, inputs: Tensor) -> Tensor:
        """The teacher's argmax class for every image of ``inputs`` (N,)."""
        if isinstance(self.teacher, BaseModel):
            logits = self.teacher(inputs, mode='tensor')
        else:
            logits = self.teacher(inputs)
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            raise TypeError(
                f"the teacher's forward(inputs, mode='tensor') must return logits (N, classes); "
                f'got {type(logits).__name__}'
                + (f' of shape {tuple(logits.shape)}' if isinstance(logits, Tensor) else ''))
        num_classes = getattr(self.head, 'num_classes', None)
        if num_classes is not None and logits.shape[1] != num_classes:
            raise ValueError(f'the teacher predicts {logits.shape[1]} classes but the student head '
                             f'has {num_classes}; both must classify the same label set')
        return logits.argmax(dim=1)

    def loss(self, inputs: Tensor, data_samples: list[DataSample]) -> dict:
        labels = self.teacher_labels(inputs)
        for sample, label in zip(data_samples, labels):
            sample.set_field(label.reshape(1), DISTILL_LABEL)
        return super().loss(inputs, data_samples)

    def _keep_teacher_on_load(self, state_dict: dict, prefix: str, *args) -> None:
        """Fills the teacher's entries of a student-only checkpoint with the current weights."""
        for key, value in self.teacher.state_dict().items():
            state_dict.setdefault(f'{prefix}{TEACHER}.{key}', value)


def _drop_teacher_from_state_dict(module: nn.Module, state_dict: OrderedDict, prefix: str,
                                  local_metadata: dict) -> OrderedDict:
    teacher_prefix = f'{prefix}{TEACHER}.'
    for key in [k for k in state_dict if k.startswith(teacher_prefix)]:
        del state_dict[key]
    return state_dict
