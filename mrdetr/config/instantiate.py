"""``instantiate``: build the object tree described by a config.

Every dict-like node with a ``_target_`` is called with its other keys as keyword arguments, after
those have been built in turn; lists are built element-wise; dict-like nodes without ``_target_``
become plain ``dict`` and ``ListConfig`` becomes plain ``list``; other values pass through.
omegaconf interpolations (``"${..num_queries}"``, ``"${model.num_queries}"``) are resolved against
the root of the config the node belongs to, so a sub-node such as ``cfg.model`` can be built alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from .lazy import TARGET_KEY, locate, target_to_str

__all__ = ["InstantiationError", "instantiate"]

_ROOT_NAME = "<root>"


class InstantiationError(RuntimeError):
    """A config node could not be built; names the node's dotted path and its target.

    Attributes:
        path: dotted path of the failing node, e.g. ``"model.transformer.encoder"``.
        target: the node's ``_target_`` as written in the config (dotted path or object).
    """

    def __init__(self, path: str, target: Any, reason: str) -> None:
        self.path = path or _ROOT_NAME
        self.target = target
        target_text = "" if target is None else f" (_target_={_target_name(target)})"
        super().__init__(f"Cannot instantiate config node '{self.path}'{target_text}: {reason}")


def instantiate(cfg: Any) -> Any:
    """Recursively builds the objects a config describes.

    Args:
        cfg: a ``DictConfig``/``ListConfig`` (typically made with ``LazyCall``), a plain
            ``dict``/``list``/``tuple`` possibly holding such nodes, or any other value.

    Returns:
        The built object for a node with ``_target_``; a plain ``dict``/``list`` (``tuple`` stays
        ``tuple``) of built values for containers without one; other values unchanged.

    Raises:
        InstantiationError: a target cannot be located or called, or an interpolation or a
            mandatory (``???``) value cannot be resolved; the message names the node's path.
    """
    return _build(cfg, _node_path(cfg) if OmegaConf.is_config(cfg) else "")


def _build(node: Any, path: str) -> Any:
    if isinstance(node, (DictConfig, ListConfig)) and node._is_none():
        return None
    if isinstance(node, (list, ListConfig)) or type(node) is tuple:
        built = [_build(_child(node, i, path), _join(path, i)) for i in range(len(node))]
        return tuple(built) if isinstance(node, tuple) else built
    if isinstance(node, (dict, DictConfig)):
        keys = list(node.keys())
        target = _resolve_target(node, path) if TARGET_KEY in keys else None
        kwargs = {
            key: _build(_child(node, key, path), _join(path, key))
            for key in keys
            if key != TARGET_KEY
        }
        if target is None:
            return kwargs
        bad_keys = [key for key in kwargs if not isinstance(key, str)]
        if bad_keys:
            raise InstantiationError(
                path, target, f"keyword names must be strings, got {bad_keys}."
            )
        try:
            return target(**kwargs)
        except Exception as exc:
            raise InstantiationError(path, target, f"{type(exc).__name__}: {exc}") from exc
    return node


def _resolve_target(node: DictConfig | dict, path: str) -> Callable[..., Any]:
    raw = _child(node, TARGET_KEY, path)
    target = raw
    if isinstance(raw, str):
        try:
            target = locate(raw)
        except ImportError as exc:
            raise InstantiationError(path, raw, str(exc)) from exc
    if not callable(target):
        raise InstantiationError(
            path, raw, f"_target_ must be callable or a dotted path, got {type(target).__name__}."
        )
    return target


def _child(node: Any, key: Any, path: str) -> Any:
    """Reads one child, resolving interpolations; errors name the child's path."""
    try:
        return node[key]
    except Exception as exc:  # omegaconf interpolation / missing-value errors
        raise InstantiationError(_join(path, key), None, f"{type(exc).__name__}: {exc}") from exc


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _node_path(node: DictConfig | ListConfig) -> str:
    """Dotted path of ``node`` from the root of its config (``""`` for a root)."""
    parts: list[str] = []
    current: Any = node
    while current is not None and current._get_parent() is not None:
        parts.append(str(current._key()))
        current = current._get_parent()
    return ".".join(reversed(parts))


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    return target_to_str(target) or repr(target)
