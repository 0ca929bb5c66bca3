"""repnext_mm/paper.py: the paper's tables, cross-checked against the claims of its text.

The values were copied from the paper's Tables 2-4; each claim below is a sentence of the paper
that a typo in one of them would contradict.
"""
import pytest

from repnext_mm import paper
from repnext_mm.models import RepNeXt

REPNEXT = paper.REPNEXT_CLASSIFIERS
BASELINES = paper.BASELINE_CLASSIFIERS


def test_tables_name_existing_archs():
    assert set(REPNEXT) <= set(RepNeXt.arch_settings)
    assert set(paper.REPNEXT_DENSE) <= set(REPNEXT)


def test_claims_of_the_abstract_and_section_4_1():
    # "RepNeXt-M4 matches RepViT-M1.5's 82.3% accuracy within 1.5ms on an iPhone 12 [...] and
    # reduces parameters by 0.7M."
    repvit = BASELINES['RepViT']
    assert REPNEXT['m4'].top1 == repvit['M1.5'].top1 == 82.3
    assert REPNEXT['m4'].iphone12_ms < 1.5
    assert repvit['M1.5'].params_m - REPNEXT['m4'].params_m == pytest.approx(0.7)
    # "RepNeXt-M2 outperform EfficientFormerV2-S1 by 1.1% top-1 accuracy."
    assert REPNEXT['m2'].top1 - BASELINES['EfficientFormerV2']['S1'].top1 == pytest.approx(1.1)
    # "RepNeXt-M1 and RepNeXt-M2 consistently surpass RepViT-M0.9 and RepViT-M1.0 by 0.1%."
    assert REPNEXT['m1'].top1 - repvit['M0.9'].top1 == pytest.approx(0.1)
    assert REPNEXT['m2'].top1 - repvit['M1.0'].top1 == pytest.approx(0.1)
    # Without distillation: "RepNeXt-M1 achieves a Top-1 accuracy of 77.5%, with a latency of
    # 0.86ms and a compact size of 4.8M parameters."
    assert (REPNEXT['m1'].top1_plain, REPNEXT['m1'].iphone12_ms, REPNEXT['m1'].params_m) == (
        77.5, 0.86, 4.8)
    # "with a latency of 1.0ms, RepNeXt-M2 surpasses RepViT-M1.0 by 0.3% in accuracy while
    # having 0.3M fewer parameters."
    assert REPNEXT['m2'].iphone12_ms == 1.0
    assert REPNEXT['m2'].top1_plain - repvit['M1.0'].top1_plain == pytest.approx(0.3)
    assert repvit['M1.0'].params_m - REPNEXT['m2'].params_m == pytest.approx(0.3)
    # "RepNeXt-M4 matches the 81.2% accuracy of RepViT-M1.5, but with a 0.03ms speed advantage."
    assert REPNEXT['m4'].top1_plain == repvit['M1.5'].top1_plain == 81.2
    assert repvit['M1.5'].iphone12_ms - REPNEXT['m4'].iphone12_ms == pytest.approx(0.03)


def test_claims_of_section_4_2():
    # "RepNeXt-M4 outperforms RepViT-m1.5 by 1.1 AP^box and 0.6 AP^mask" (RepViT-M1.5: 41.6 / 38.6
    # in Table 4, which has no baseline table here).
    assert paper.REPNEXT_DENSE['m4'].box_ap - 41.6 == pytest.approx(1.1)
    assert paper.REPNEXT_DENSE['m4'].mask_ap - 38.6 == pytest.approx(0.6)


@pytest.mark.parametrize('family', BASELINES)
def test_families_are_listed_in_order_of_latency_and_size(family):
    models = list(BASELINES[family].values())
    for field in ('iphone12_ms', 'params_m', 'top1'):
        values = [getattr(model, field) for model in models]
        assert values == sorted(values), (family, field)


def test_repnext_grows_in_latency_and_accuracy_and_distillation_helps():
    rows = [REPNEXT[arch] for arch in sorted(REPNEXT)]
    for field in ('iphone12_ms', 'params_m', 'gmacs', 'top1', 'top1_plain'):
        values = [getattr(row, field) for row in rows]
        assert values == sorted(values), field
    assert all(row.top1 > row.top1_plain for row in rows)
    dense = [paper.REPNEXT_DENSE[arch] for arch in sorted(paper.REPNEXT_DENSE)]
    for field in ('iphone12_ms', 'box_ap', 'mask_ap', 'miou'):
        values = [getattr(row, field) for row in dense]
        assert values == sorted(values), field


def test_repnext_top1():
    assert paper.repnext_top1() == {arch: row.top1 for arch, row in REPNEXT.items()}
    assert paper.repnext_top1(distilled=False)['m5'] == 82.4
    assert set(paper.repnext_top1(distilled=False)) == set(REPNEXT)
