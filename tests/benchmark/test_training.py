"""The training-step forms: the SRP-free bound's structure, the step, and the memory worker."""
import json
from dataclasses import asdict

import pytest
import torch

from repnext_mm.benchmark.training import (StridedCopy, TrainingCase, measure_training_memory,
                                           srp_free, training_step)
from repnext_mm.models.backbones.repnext import RepDWConvM, RepDWConvS, RepNeXt

TINY = dict(widths=[8, 16, 32, 64], depths=[1, 1, 1, 1])


def _srp_convs(model):
    return [m for m in model.modules() if isinstance(m, (RepDWConvS, RepDWConvM))]


def test_srp_free_model_has_no_srp_convs_and_the_same_output_shapes():
    model = RepNeXt(TINY)
    bound = srp_free(model)
    copies = [m for m in bound.modules() if isinstance(m, StridedCopy)]
    assert not _srp_convs(bound)
    assert len(copies) == len(_srp_convs(model)) == 2 * 4 + 2 * 3  # 4 blocks, 3 downsamples
    assert sorted(c.stride for c in copies) == sorted(m.stride for m in _srp_convs(model))
    assert _srp_convs(model), 'the original model must be left unchanged'
    x = torch.randn(2, 3, 32, 32)
    assert [o.shape for o in bound(x)] == [o.shape for o in model(x)]


def test_training_case_builds_each_form_in_its_layout():
    case = TrainingCase(TINY, 'branches', 'channels_last', batch_size=2, image_size=32)
    model, inputs = case.build_model(), case.inputs()
    assert model.training and model.srp_forward == 'branches'
    assert inputs.shape == (2, 3, 32, 32)
    assert inputs.is_contiguous(memory_format=torch.channels_last)
    assert not _srp_convs(TrainingCase(TINY, 'srp-free').build_model())
    with pytest.raises(ValueError, match='form must be one of'):
        TrainingCase(TINY, 'fused')


def test_training_case_with_checkpointing_and_a_rectangular_size_survives_json():
    """The memory worker gets its case as JSON: the (height, width) pair comes back a list."""
    case = TrainingCase(TINY, 'merged', batch_size=2, image_size=(32, 64), with_cp=True)
    restored = TrainingCase(**json.loads(json.dumps(asdict(case))))
    assert restored.build_model().with_cp and not TrainingCase(TINY, 'merged').build_model().with_cp
    assert restored.inputs().shape == case.inputs().shape == (2, 3, 32, 64)


def test_training_step_computes_gradients():
    case = TrainingCase(TINY, 'merged', batch_size=2, image_size=32)
    model = case.build_model()
    training_step(model, case.inputs())
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.skipif(not __import__('pathlib').Path('/proc/self/clear_refs').exists(),
                    reason='needs Linux /proc/self/clear_refs')
@pytest.mark.slow  # a fresh process
def test_memory_worker_measures_a_positive_peak_in_a_fresh_process():
    case = TrainingCase(TINY, 'merged', batch_size=8, image_size=64)
    peaks = measure_training_memory(case, threads=1, steps=2)
    assert peaks is not None and len(peaks) == 2
    assert all(isinstance(p, int) and p > 0 for p in peaks)
