"""The exported segmentor's and classifier's outputs are what mmseg's / mmpretrain's predict give."""
import pytest
import torch

from repnext_mm.apis.model import prepare_model
from repnext_mm.deploy.exportable import ExportWrapper
from tests.helpers import SHAPES_CONFIGS, randomize_norms

pytestmark = pytest.mark.usefixtures('one_cpu_thread')


@pytest.fixture(scope='module')
def models():
    """The shapes segmentor and classifier, fused, with random BN statistics."""
    torch.manual_seed(0)
    return {task: randomize_norms(prepare_model(SHAPES_CONFIGS[task]).fused())
            for task in ('segmentor', 'classifier')}


def test_segmentor_outputs_are_mmsegs_logits_at_the_input_size_and_their_argmax(models):
    from mmseg.structures import SegDataSample

    model = models['segmentor']
    image = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    wrapper = ExportWrapper(model, 'segmentor', seg_argmax=True).eval()
    assert wrapper.output_names == ['seg_logits', 'seg_map']
    with torch.no_grad():
        logits, seg_map = wrapper(image)
        meta = dict(img_shape=(64, 96), ori_shape=(64, 96), pad_shape=(64, 96))
        (expected,) = model.predict(image, [SegDataSample(metainfo=meta)])
    assert logits.shape == (1, 4, 64, 96) and seg_map.shape == (1, 64, 96)
    assert seg_map.dtype == torch.int64
    torch.testing.assert_close(logits[0], expected.seg_logits.data)
    assert torch.equal(seg_map, expected.pred_sem_seg.data)
    assert ExportWrapper(model, 'segmentor').output_names == ['seg_logits']


def test_classifier_outputs_logits_and_mmpretrains_scores(models):
    from mmpretrain.structures import DataSample

    model = models['classifier']
    image = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    wrapper = ExportWrapper(model, 'classifier', seg_argmax=True).eval()  # not a segmentor: ignored
    assert wrapper.output_names == ['logits', 'scores']
    with torch.no_grad():
        logits, scores = wrapper(image)
        expected = model.predict(image, [DataSample(), DataSample()])
    torch.testing.assert_close(logits, model(image, mode='tensor'))
    torch.testing.assert_close(scores, torch.stack([e.pred_score for e in expected]))
