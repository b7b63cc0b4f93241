"""``LazyCall`` and dotted-path helpers: describe an object tree as data before building it.

A config node is an ``omegaconf.DictConfig`` holding a ``_target_`` (what to call) and the keyword
arguments of that call. Targets are stored as their dotted import path (``"torch.nn.Linear"``) so a
config can be written to YAML and read back; only a callable that cannot be found again by its path
(a lambda, a class defined inside a function or a config file) is kept as the object itself.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

__all__ = ["LazyCall", "TARGET_KEY", "locate", "target_to_str"]

TARGET_KEY = "_target_"
"""Key of a config node that names the callable building the node."""

_CONFIG_FLAGS = {"allow_objects": True}


def locate(name: str) -> Any:
    """Finds an object from its dotted path, like ``pydoc.locate`` but with a clear error.

    The longest importable module prefix is imported, then the remaining parts are looked up as
    nested attributes, so ``"pkg.mod.Class.method"`` and ``"torch.nn.Linear"`` both work. A name
    with no importable prefix is looked up in ``builtins`` (``"dict"``).

    Args:
        name: dotted path such as ``"mrdetr.structures.Boxes.cat"``.

    Returns:
        The object the path names.

    Raises:
        ImportError: the path does not name an object; the message says which part was missing.
    """
    if not isinstance(name, str) or not name or any(not part for part in name.split(".")):
        raise ImportError(
            f"Cannot locate {name!r}: expected a dotted path like 'pkg.module.Class'."
        )
    parts = name.split(".")
    obj: Any = None
    n_module = 0
    for i in range(1, len(parts) + 1):
        module_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Stop only if this very module is missing, not a dependency it imports.
            if exc.name is not None and (
                module_name == exc.name or module_name.startswith(exc.name + ".")
            ):
                break
            raise
        n_module = i
    if n_module == 0:
        obj = builtins
    for j in range(n_module, len(parts)):
        try:
            obj = getattr(obj, parts[j])
        except AttributeError:
            where = ".".join(parts[:j]) or "builtins"
            raise ImportError(
                f"Cannot locate {name!r}: {where!r} has no attribute {parts[j]!r}."
            ) from None
    return obj


def target_to_str(target: Any) -> str | None:
    """Returns the dotted path that :func:`locate` maps back to ``target``, or ``None``.

    Args:
        target: a class, function, method or other callable.

    Returns:
        ``"module.qualname"`` when locating that string gives back ``target``; ``None`` for objects
        that cannot be found again by name (lambdas, local classes, ``functools.partial`` objects,
        anything defined in a config file).
    """
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    path = f"{module}.{qualname}"
    return path if _locates_to(path, target) else None


def _locates_to(path: str, target: Any) -> bool:
    try:
        found = locate(path)
    except Exception:  # noqa: BLE001 - any failure means "not this path"
        return False
    # Bound methods (``Class.classmethod``) are new objects on each lookup: compare them with ==.
    return found is target or (inspect.ismethod(found) and found == target)


class LazyCall:
    """Wraps a callable so that calling it records the call as a config instead of running it.

    Example:
        >>> layer = LazyCall(torch.nn.Linear)(in_features=4, out_features=2)
        >>> layer._target_
        'torch.nn.Linear'
        >>> instantiate(layer)  # -> torch.nn.Linear(4, 2)

    Args:
        target: the callable to record, or its dotted path.
    """

    def __init__(self, target: Callable[..., Any] | str) -> None:
        if not (callable(target) or isinstance(target, str)):
            raise TypeError(
                f"LazyCall expects a callable or a dotted path string, got {type(target).__name__}: "
                f"{target!r}."
            )
        self._target = target

    def __call__(self, **kwargs: Any) -> DictConfig:
        if TARGET_KEY in kwargs:
            raise TypeError(
                f"LazyCall({self._target!r}) got a keyword argument named {TARGET_KEY!r}."
            )
        path = target_to_str(self._target)
        target: Any = self._target if path is None else path
        return DictConfig(content={TARGET_KEY: target, **kwargs}, flags=dict(_CONFIG_FLAGS))

    def __repr__(self) -> str:
        return f"LazyCall({self._target!r})"
