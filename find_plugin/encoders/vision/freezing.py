"""Freezing helpers for the frozen foundation-model encoders.

FIND keeps the vision backbone and the pixel decoder frozen: no gradients *and* eval-mode behaviour
(dropout off, norm statistics fixed) even when the surrounding model is switched to ``.train()``.
A module is marked frozen with :func:`freeze_`; any module whose class uses
:class:`FrozenTrainMixin` (or any parent that calls :func:`keep_frozen_in_eval` after ``train``)
puts marked sub-modules back into eval mode after every ``train(mode)`` call.
"""

from typing import Iterator

from torch import nn

__all__ = ["freeze_", "unfreeze_", "is_frozen", "keep_frozen_in_eval", "FrozenTrainMixin"]

_FLAG = "_find_frozen"


def freeze_(module: nn.Module) -> nn.Module:
    """Freeze ``module`` in place: ``requires_grad=False`` on all parameters, eval mode, marked."""
    for p in module.parameters():
        p.requires_grad_(False)
    setattr(module, _FLAG, True)
    module.eval()
    return module


def unfreeze_(module: nn.Module) -> nn.Module:
    """Undo :func:`freeze_` on ``module`` and all its sub-modules (parameters become trainable)."""
    for m in module.modules():
        if getattr(m, _FLAG, False):
            setattr(m, _FLAG, False)
    for p in module.parameters():
        p.requires_grad_(True)
    return module


def is_frozen(module: nn.Module) -> bool:
    """True if ``module`` was marked by :func:`freeze_` (and not unfrozen since)."""
    return bool(getattr(module, _FLAG, False))


def _frozen_submodules(module: nn.Module) -> Iterator[nn.Module]:
    for m in module.modules():
        if is_frozen(m):
            yield m


def keep_frozen_in_eval(module: nn.Module) -> nn.Module:
    """Put every frozen sub-module of ``module`` (itself included) back into eval mode."""
    for m in _frozen_submodules(module):
        # nn.Module.train, not m.eval(): avoids recursing into overridden train() methods.
        nn.Module.train(m, False)
    return module


class FrozenTrainMixin:
    """Mixin for ``nn.Module`` subclasses: ``train(mode)`` keeps frozen sub-modules in eval mode.

    Put it before ``nn.Module`` (or a Module subclass) in the bases.
    """

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        return keep_frozen_in_eval(self)  # type: ignore[arg-type]
