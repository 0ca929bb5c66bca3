"""model-index.yml and configs/*/metafile.yml: complete, pointing at real files, and true; and
the command line of tools/misc/gen_metafiles.py.

The expensive part of the generator (fused MAC counts of every model) is checked on the
smallest config only; parameter counts are recomputed for every config (a build, no forward), so
a config edit that changes the model without regenerating the metafiles fails here. The
generator's helpers are tested in tests/zoo/test_metafiles.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from repnext_mm.cli import run_cli
from repnext_mm.zoo import metafiles
from tests.helpers import REPO, first_quick_rest_slow, load_tool

INDEX = REPO / 'model-index.yml'
REGENERATE = 'run python tools/misc/gen_metafiles.py'


gen = load_tool('tools/misc/gen_metafiles.py')


def _metafiles() -> list[Path]:
    if not INDEX.is_file():
        return []
    return [REPO / p for p in yaml.safe_load(INDEX.read_text())['Import']]


def _models() -> dict[str, dict]:
    """``{config path: model entry}`` over every imported metafile."""
    models = {}
    for path in _metafiles():
        for model in yaml.safe_load(path.read_text())['Models']:
            models[model['Config']] = model
    return models


MODELS = _models()
# Training-form parameters of the 1000-class classifiers, counted on the authors' model.
REFERENCE_PARAMS = {'m0': 2_716_480, 'm1': 5_323_316, 'm2': 7_049_082, 'm3': 8_466_560,
                    'm4': 14_080_480, 'm5': 22_708_860}
# Fused GMACs: classifiers at 224 and backbones at 512 (reference facts, 2-3 significant digits).
REFERENCE_GMACS_224 = {'m0': 0.388, 'm1': 0.822, 'm2': 1.111, 'm3': 1.340, 'm4': 2.289, 'm5': 4.544}
REFERENCE_GMACS_512 = {'m0': 2.02, 'm1': 4.29, 'm2': 5.80, 'm3': 7.00, 'm4': 11.96, 'm5': 23.74}


def test_index_imports_existing_metafiles():
    assert INDEX.is_file(), f'model-index.yml is missing: {REGENERATE}'
    paths = _metafiles()
    assert {p.relative_to(REPO).as_posix() for p in paths} == {
        'configs/mmpretrain/metafile.yml', 'configs/mmdet/metafile.yml', 'configs/mmseg/metafile.yml'}
    for path in paths:
        assert path.is_file(), f'{path} is imported by model-index.yml but missing: {REGENERATE}'


def test_every_config_is_listed_and_every_listed_config_exists():
    configs = {p.relative_to(REPO).as_posix() for p in metafiles.config_files(REPO)}
    assert len(configs) >= 20  # the m0..m5 variants of three libraries at least
    unlisted = sorted(configs - set(MODELS))
    assert not unlisted, f'configs missing from the metafiles: {unlisted}; {REGENERATE}'
    for config in MODELS:
        assert (REPO / config).is_file(), f'a metafile lists {config}, which does not exist; {REGENERATE}'
    names = [m['Name'] for m in MODELS.values()]
    assert len(names) == len(set(names))


def test_entries_have_the_required_fields():
    collections = set()
    for path in _metafiles():
        collections |= {c['Name'] for c in yaml.safe_load(path.read_text())['Collections']}
    for config, model in MODELS.items():
        assert model['Name'] == Path(config).stem
        assert model['In Collection'] in collections
        metadata = model['Metadata']
        assert isinstance(metadata['Parameters'], int) and metadata['Parameters'] > 1_000_000
        assert isinstance(metadata['FLOPs'], int) and metadata['FLOPs'] > 10_000_000
        assert metadata['Fused Parameters'] < metadata['Parameters']
        assert 'fused' in metadata['Counted On'] and metadata['Input Size'] in metadata['Counted On']
        assert 'Results' in model
        if 'Weights' in model:
            assert model['Weights'].startswith('https://github.com/suous/RepNeXt/releases/download/v1.0/')
            assert 'convert_official.py' in metadata['Weights Format']


def test_weights_are_files_of_the_authors_release():
    from repnext_mm import releases

    released = {r.filename for r in releases.IMAGENET} | {
        pattern.format(arch=arch) for arch in releases.DOWNSTREAM_ARCHS
        for pattern in (releases.COCO_MASK_RCNN, releases.ADE20K_SEMANTIC_FPN)}
    weights = {m['Name']: m['Weights'] for m in MODELS.values() if 'Weights' in m}
    # Distilled classifiers M0-M5, detectors (and the M4 alias) and segmentors M3-M5.
    assert len(weights) == 6 + 4 + 3
    for name, url in weights.items():
        assert url.startswith(releases.RELEASE_URL), name
        assert url.removeprefix(releases.RELEASE_URL) in released, name


def test_paper_results_and_demo_entries():
    def results(name):
        return next(m for m in MODELS.values() if m['Name'] == name)['Results']

    assert results('repnext_m1_8xb256_in1k_distill')[0]['Metrics'] == {'Top 1 Accuracy': 78.8}
    assert results('repnext_m5_8xb256_in1k')[0]['Metrics'] == {'Top 1 Accuracy': 82.4}  # Table 3
    assert [r['Metrics'] for r in results('mask_rcnn_repnext_m4_fpn_1x_coco')] == [
        {'box AP': 42.7}, {'mask AP': 39.2}]
    assert results('mask_rcnn_repnext_m4') == results('mask_rcnn_repnext_m4_fpn_1x_coco')  # alias
    assert results('fpn_repnext_m5_8xb4-40k_ade20k-512x512')[0]['Metrics'] == {'mIoU': 45.0}
    for name in ('repnext_m0_8xb256_in1k', 'mask_rcnn_repnext_m1_fpn_1x_coco',
                 'fpn_repnext_m2_8xb4-40k_ade20k-512x512', 'repnext_m0_shapes',
                 'mask_rcnn_repnext_m0_fpn_shapes', 'fpn_repnext_m0_shapes'):
        assert results(name) is None, name
    shapes = [m for m in MODELS.values() if 'shapes' in m['Name']]
    assert len(shapes) == 3 and all('Demo' in m['Metadata'] and 'Weights' not in m for m in shapes)


def test_complexity_matches_the_reference_model():
    """Our measured figures agree with the counts on the authors' model (reference facts)."""
    for model in MODELS.values():
        metadata, name = model['Metadata'], model['Name']
        arch = metadata['Architecture'][0].split('-')[-1].lower()
        if name.startswith('repnext_') and 'in1k' in name:
            assert metadata['Parameters'] == REFERENCE_PARAMS[arch], name
            assert metadata['FLOPs'] / 1e9 == pytest.approx(REFERENCE_GMACS_224[arch], rel=2e-3), name
        elif metadata['Input Size'] == '512x512':
            assert metadata['FLOPs'] / 1e9 == pytest.approx(REFERENCE_GMACS_512[arch], rel=3e-3), name


@pytest.mark.parametrize('config', first_quick_rest_slow(sorted(MODELS)),
                         ids=lambda c: Path(c).stem)
def test_parameters_equal_a_fresh_count(config):
    info = metafiles.read_config(REPO / config, REPO)
    assert metafiles.count_parameters(info) == MODELS[config]['Metadata']['Parameters'], \
        f'{config} builds a different model than its metafile entry says; {REGENERATE}'
    assert f'{info.input_size[0]}x{info.input_size[1]}' == MODELS[config]['Metadata']['Input Size']


def test_fused_figures_equal_a_fresh_measurement_for_the_smallest_config():
    config = 'configs/mmpretrain/repnext_m0_shapes.py'
    measured = metafiles.measure(metafiles.read_config(REPO / config, REPO))
    metadata = MODELS[config]['Metadata']
    assert (measured['params'], measured['fused_params'], measured['macs']) == (
        metadata['Parameters'], metadata['Fused Parameters'], metadata['FLOPs'])


def test_model_index_passes_modelindex_checks():
    from modelindex.load_model_index import load  # mim's checker (model-index, with mmpretrain)

    index = load(str(INDEX))
    assert len(index.models) == len(MODELS)
    assert index.check(silent=True) == []


def test_cli_check_reports_stale_files_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gen, 'ROOT', tmp_path)
    monkeypatch.setattr(metafiles, 'generate', lambda root, show_progress: {'a.yml': 'x: 1\n'})
    assert run_cli(gen.main, ['--check', '--no-progress']) == 1
    assert 'stale (rerun python tools/misc/gen_metafiles.py): a.yml' in capsys.readouterr().err
    assert not (tmp_path / 'a.yml').exists()

    assert run_cli(gen.main, ['--no-progress']) == 0
    assert (tmp_path / 'a.yml').read_text() == 'x: 1\n'
    assert 'wrote a.yml' in capsys.readouterr().out
    assert run_cli(gen.main, ['--check', '--no-progress']) == 0
    assert 'up to date' in capsys.readouterr().out


def test_cli_reports_a_config_it_cannot_describe_in_one_line(monkeypatch, capsys):
    def fail(root, show_progress):
        raise metafiles.MetafileError('configs/mmfoo/ is not one of configs/{...}/')

    monkeypatch.setattr(metafiles, 'generate', fail)
    assert run_cli(gen.main, ['--no-progress']) == 2
    assert capsys.readouterr().err == 'error: configs/mmfoo/ is not one of configs/{...}/\n'
