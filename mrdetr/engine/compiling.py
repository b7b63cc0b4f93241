"""``torch.compile`` of chosen submodules for inference (``train.compile``; off by default).

The whole model does not compile well: its forward reads Python lists of dicts, picks proposals
with a data-dependent top-k, loops over levels and routes and calls a custom autograd function
(the deformable attention), so Dynamo would split it into many graphs. The convolutional parts
(``backbone``, ``neck``) are straight tensor code; they compile with dynamic shapes (one compile
for all image sizes after the first size change, not one per size). ``benchmarks/README.md``
gives the compile time and the speed with and without it.

Config (``configs/common/train.py``)::

    train.compile = dict(enabled=False, modules=["backbone", "neck"])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from torch import nn

from mrdetr.config.access import get_dotted

__all__ = ["COMPILE_KEY", "compile_from_config", "compile_submodules"]

logger = logging.getLogger(__name__)

COMPILE_KEY = "train.compile"
_DEFAULT_MODULES = ("backbone", "neck")


def compile_submodules(model: nn.Module, modules: Sequence[str], *, dynamic: bool = True) -> None:
    """Compile each named submodule of ``model`` in place (``nn.Module.compile``).

    The compile itself happens on the first call (and once more when the input shape first
    changes, with ``dynamic=True``), not here.

    Args:
        model: the model (its parameters are shared, not copied).
        modules: dotted submodule names, e.g. ``["backbone", "neck"]``.
        dynamic: compile for symbolic shapes (images of any size) rather than one fixed shape.

    Raises:
        ValueError: a name does not lead to a submodule of ``model``.
    """
    for name in modules:
        try:
            module = model.get_submodule(name)
        except AttributeError as exc:
            raise ValueError(
                f"{COMPILE_KEY}.modules: {name!r} is not a submodule of {type(model).__name__}"
            ) from exc
        module.compile(dynamic=dynamic)
    logger.info("torch.compile on %s (dynamic=%s)", list(modules), dynamic)


def compile_from_config(model: nn.Module, cfg: Any, enabled: bool | None = None) -> bool:
    """Compile the submodules of ``train.compile.modules`` when ``enabled`` (``None``: the
    config's ``train.compile.enabled``, default off).

    Returns:
        Whether anything was compiled.
    """
    if enabled is None:
        enabled = bool(get_dotted(cfg, f"{COMPILE_KEY}.enabled", False))
    if not enabled:
        return False
    modules = list(get_dotted(cfg, f"{COMPILE_KEY}.modules", _DEFAULT_MODULES))
    compile_submodules(model, modules)
    return True
