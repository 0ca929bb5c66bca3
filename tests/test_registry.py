"""``dict(type='repnext_mm.RepNeXt')`` builds from the registries of all three libraries."""
import subprocess
import sys
import textwrap

import pytest

import repnext_mm  # noqa: F401
from repnext_mm.models import RepNeXt


@pytest.mark.parametrize('registry_path', ['mmdet.registry', 'mmseg.registry', 'mmpretrain.registry'])
def test_backbone_builds_from_each_library_registry(registry_path):
    registry = __import__(registry_path, fromlist=['MODELS']).MODELS
    model = registry.build(dict(type='repnext_mm.RepNeXt', arch='m0', out_indices=(1, 3)))
    assert isinstance(model, RepNeXt) and model.out_indices == (1, 3)


@pytest.mark.slow  # a fresh interpreter importing the whole stack
def test_custom_imports_in_a_config_file_register_the_backbone(tmp_path):
    """The plugin path users take: a config with custom_imports, in a fresh interpreter."""
    config = tmp_path / 'cfg.py'
    config.write_text(textwrap.dedent("""
        custom_imports = dict(imports=['repnext_mm'], allow_failed_imports=False)
        default_scope = 'mmdet'
        backbone = dict(type='repnext_mm.RepNeXt', arch='m1', frozen_stages=1, norm_eval=True)
    """))
    script = textwrap.dedent(f"""
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        cfg = Config.fromfile({str(config)!r})
        init_default_scope(cfg.default_scope)
        from mmdet.registry import MODELS
        model = MODELS.build(cfg.backbone)
        print(type(model).__module__, model.frozen_stages, model.norm_eval)
    """)
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-3:] == ['repnext_mm.models.backbones.repnext', '1', 'True']
