"""The one way to import an optional dependency: the module, or an error saying how to install it.

The OpenMMLab stack is required; ONNX, ONNX Runtime, OpenVINO, coremltools and grad-cam are
needed only by the tools that use them, so they are imported where they are used::

    ort = require('onnxruntime', 'ONNX Runtime sessions')
"""
from __future__ import annotations

import importlib
from types import ModuleType

from repnext_mm.utils.errors import InputError

#: The optional dependencies by top-level module: the name a user knows and the pip package.
OPTIONAL_PACKAGES: dict[str, tuple[str, str]] = {
    'onnx': ('ONNX', 'onnx'),
    'onnxruntime': ('ONNX Runtime', 'onnxruntime'),
    'openvino': ('OpenVINO', 'openvino'),
    'coremltools': ('coremltools', 'coremltools'),
    'pytorch_grad_cam': ('grad-cam', 'grad-cam'),
}
#: Every install command passes it, so that nothing pulls in a different torch.
CONSTRAINTS = 'requirements/constraints.txt'


def require(module_name: str, purpose: str,
            error: type[InputError] = InputError) -> ModuleType:
    """``import module_name``, or one ``error`` line naming the package and its install command.

    Args:
        module_name: The module to import, e.g. ``'onnxruntime.quantization'``.
        purpose: What needs it, for the message, e.g. ``'Core ML export'``.
        error: :class:`InputError` or a subclass of it (the tools print either as one
            ``error:`` line).

    Raises:
        error: ``'OpenVINO is not installed: pip install openvino -c
            requirements/constraints.txt (needed for ...; tools/setup_env.sh installs it into
            .venv)'``.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        top = module_name.split('.')[0]
        name, package = OPTIONAL_PACKAGES.get(top, (top, top))
        raise error(f'{name} is not installed: pip install {package} -c {CONSTRAINTS} (needed for '
                    f'{purpose}; tools/setup_env.sh installs it into .venv)') from exc
