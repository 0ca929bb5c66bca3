"""The table of the authors' released files (``repnext_mm/releases.py``)."""
from repnext_mm import releases
from repnext_mm.models.backbones.repnext import RepNeXt


def test_every_imagenet_file_of_the_release_is_listed_once():
    names = [release.filename for release in releases.IMAGENET]
    assert len(set(names)) == len(names) == 12
    assert {r.filename for r in releases.IMAGENET if r.recipe == 'repvit'} == {
        f'repnext_m{i}_distill_300e.pth' for i in range(6)}
    assert {r.filename for r in releases.IMAGENET if r.recipe == 'starnet'} == {
        f'repnext_m{i}_sz224_4xbs{bs}_ep300{suffix}.pth.tar'
        for i in range(3) for bs, suffix in ((512, ''), (256, '_distill'))}
    assert {r.arch for r in releases.IMAGENET} == set(RepNeXt.arch_settings)


def test_each_file_has_its_address_tag_and_evaluation():
    m4 = releases.imagenet_release('repnext_m4_distill_300e.pth')
    assert m4.url == ('https://github.com/suous/RepNeXt/releases/download/v1.0/'
                      'repnext_m4_distill_300e.pth')
    assert (m4.tag, m4.distilled, m4.top1, m4.crop_pct, m4.interpolation) == (
        'dist_300e_in1k', True, 82.3, 0.875, 'bicubic')
    m0 = releases.imagenet_release(releases.release_url('repnext_m0_sz224_4xbs512_ep300.pth.tar'))
    assert (m0.tag, m0.distilled, m0.top1, m0.top5, m0.crop_pct) == (
        'starnet_300e_in1k', False, 73.8, 91.6, 0.9)
    assert releases.imagenet_release('repnext_m3_coco.pth') is None
    tags = [(r.arch, r.tag) for r in releases.IMAGENET]
    assert len(set(tags)) == len(tags)


def test_the_environment_can_name_another_release_folder(monkeypatch):
    monkeypatch.delenv(releases.RELEASE_URL_ENV, raising=False)
    assert releases.release_base_url() == releases.RELEASE_URL
    monkeypatch.setenv(releases.RELEASE_URL_ENV, 'http://127.0.0.1:8000/mirror')
    assert releases.release_url('repnext_m0_coco.pth') == \
        'http://127.0.0.1:8000/mirror/repnext_m0_coco.pth'
    assert releases.imagenet_release('repnext_m1_distill_300e.pth').url.startswith(
        'http://127.0.0.1:8000/mirror/')


def test_every_released_checkpoint_is_listed_and_no_core_ml_model():
    files = releases.CHECKPOINT_FILES
    assert len(files) == len(set(files)) == 6 + 6 + 3 + 3 + 3 + 3
    assert {r.filename for r in releases.IMAGENET} < set(files)
    assert {'repnext_m0_distill_300e_fused.pt', 'repnext_m5_coco.pth',
            'repnext_m3_ade20k.pth'} < set(files)
    assert not any(name.endswith('.mlmodel') for name in files)
