"""Whole-model reparameterization: every module that can fuse itself, fused in place.

The analogue of timm's ``reparameterize_model``: any submodule with ``switch_to_deploy()``
(RepNeXt, its classifier head, mmpretrain's RepVGG / MobileOne, ...) is switched, outermost
first, so a classifier, detector or segmentor becomes its plain-convolution inference form.
"""
from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def reparameterizable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The outermost submodules of ``model`` that define ``switch_to_deploy()``.

    Only the outermost ones: a module's own ``switch_to_deploy`` fuses its children (e.g.
    ``RepNeXt`` handles its blocks), and calling it on children first would bypass the parent's
    bookkeeping (its ``deploy`` flag).

    Returns:
        ``{qualified name: module}`` in registration order; ``''`` is ``model`` itself.
    """
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not callable(getattr(module, 'switch_to_deploy', None)):
            continue
        if any(name == parent or name.startswith(parent + '.') for parent in found if parent) \
                or '' in found:
            continue
        found[name] = module
    return found


def switch_to_deploy_all(model: nn.Module) -> list[str]:
    """Calls ``switch_to_deploy()`` on every outermost reparameterizable module, in place.

    Args:
        model: Any model; its modules that define ``switch_to_deploy`` (RepNeXt backbone,
            RepNeXt classifier head, and e.g. mmpretrain's RepVGG / MobileOne) are fused.

    Returns:
        Qualified names of the modules that were switched (empty if there were none).
    """
    modules = reparameterizable_modules(model)  # collected first: switching edits the module tree
    for module in modules.values():
        module.switch_to_deploy()
    return list(modules)


def count_batchnorms(model: nn.Module) -> int:
    """Number of BatchNorm layers left (a fully fused RepNeXt backbone has none)."""
    return sum(isinstance(m, _BatchNorm) for m in model.modules())
