"""repnext_mm: RepNeXt backbones for mmdet 3.x, mmseg 1.x and mmpretrain 1.x.

Like mmdet, the package carries its configs and tools under ``repnext_mm/.mim`` so that
``mim train repnext_mm CONFIG`` finds them: copied into wheels and sdists, symlinked for
editable installs (``pip install -e .`` / ``mim install -e .``).
"""
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def read_version() -> str:
    namespace: dict = {}
    with open(osp.join(ROOT, 'repnext_mm', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def add_mim_extension() -> None:
    """Places configs/, tools/ and model-index.yml in repnext_mm/.mim for the current command."""
    editable = any(cmd in sys.argv for cmd in ('develop', 'editable_wheel'))
    if editable:
        mode = 'symlink'
    elif any(cmd in sys.argv for cmd in ('sdist', 'bdist_wheel', 'install', 'build', 'build_py')):
        mode = 'copy'
    else:
        return
    mim_dir = osp.join(ROOT, 'repnext_mm', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(ROOT, name), osp.join(mim_dir, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_dir), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='repnext_mm',
        version=read_version(),
        description='RepNeXt backbones for OpenMMLab: mmdet, mmseg and mmpretrain',
        long_description=open(osp.join(ROOT, 'README.md'), encoding='utf-8').read()
        if osp.exists(osp.join(ROOT, 'README.md')) else '',
        long_description_content_type='text/markdown',
        license='Apache-2.0',
        python_requires='>=3.10',
        packages=find_packages(include=['repnext_mm', 'repnext_mm.*']),
        include_package_data=True,
        package_data={'repnext_mm': ['.mim/model-index.yml', '.mim/configs/**/*', '.mim/tools/**/*']},
        install_requires=['torch>=2.0', 'mmengine>=0.10.0,<1.0', 'mmcv>=2.0.0,<2.2.0', 'numpy'],
        extras_require={
            'mmdet': ['mmdet>=3.0.0,<3.4.0', 'pycocotools'],
            'mmseg': ['mmsegmentation>=1.0.0,<1.3.0', 'ftfy', 'regex'],
            'mmpretrain': ['mmpretrain>=1.0.0,<1.3.0'],
            'deploy': ['onnx', 'onnxruntime', 'openvino', 'coremltools'],
            # mim imports pkg_resources without declaring setuptools, which drops it in 81.
            'mim': ['openmim', 'setuptools>=64,<81'],
            'tests': ['pytest'],
        },
        zip_safe=False,
    )
