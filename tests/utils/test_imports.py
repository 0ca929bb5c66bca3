"""repnext_mm/utils/imports.py: a missing optional dependency is one error line that names the
package and its constrained install command."""
import json
import sys

import pytest

from repnext_mm.utils.errors import InputError
from repnext_mm.utils.imports import OPTIONAL_PACKAGES, require


def test_an_installed_module_is_returned():
    assert require('json', 'a test') is json


@pytest.mark.parametrize('module', sorted(OPTIONAL_PACKAGES))
def test_a_missing_dependency_is_one_line_naming_the_install(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` fail
    name, package = OPTIONAL_PACKAGES[module]
    with pytest.raises(InputError) as error:
        require(module, 'a test')
    message = str(error.value)
    assert message.startswith(f'{name} is not installed: pip install {package} '
                              '-c requirements/constraints.txt (needed for a test')
    assert '\n' not in message


def test_a_submodule_names_its_package_and_the_error_is_the_callers(monkeypatch):
    class CustomError(InputError):
        pass

    for module in ('onnxruntime', 'onnxruntime.quantization'):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(CustomError, match=r'^ONNX Runtime is not installed: pip install '
                                          r'onnxruntime -c requirements/constraints\.txt '
                                          r'\(needed for int8 export'):
        require('onnxruntime.quantization', 'int8 export', CustomError)
