"""Read, test and write config values by dotted key (``"train.amp.enabled"``, ``"a.list.0"``).

Works on ``DictConfig``/``ListConfig`` and on plain ``dict``/``list``/``tuple`` trees; a digit part
indexes a list. Reading never creates a key (unlike attribute access on a non-struct
``DictConfig``), and a missing key or a ``None`` on the way returns the default.

Example:
    >>> get_dotted(cfg, "train.amp.enabled", False)
    >>> set_dotted(cfg, "dataloader.train.seed", 3)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig

__all__ = [
    "get_dotted",
    "has_child",
    "has_dotted",
    "set_dotted",
    "split_dotted",
    "updated_copy",
]

_SEP = "."
_MISSING = object()


def split_dotted(key: str) -> list[str]:
    """``"a.b.c"`` -> ``["a", "b", "c"]``.

    Raises:
        ValueError: ``key`` is empty or has an empty part (``"a..b"``, ``".a"``).
    """
    parts = key.split(_SEP) if isinstance(key, str) else []
    if not parts or any(not part for part in parts):
        raise ValueError(f"{key!r} is not a dotted key like 'a.b.c'")
    return parts


def _is_sequence(node: Any) -> bool:
    return isinstance(node, (ListConfig, list, tuple))


def has_child(node: Any, part: str) -> bool:
    """Whether the container ``node`` has the child ``part`` (an index for a list)."""
    if isinstance(node, (DictConfig, ListConfig)) and node._is_none():
        return False
    if _is_sequence(node):
        return part.isdigit() and int(part) < len(node)
    if isinstance(node, DictConfig):
        return part in node.keys()
    return isinstance(node, Mapping) and part in node


def _child(node: Any, part: str) -> Any:
    if not has_child(node, part):
        return _MISSING
    return node[int(part)] if _is_sequence(node) else node[part]


def _walk(cfg: Any, parts: Sequence[str]) -> Any:
    node = cfg
    for part in parts:
        node = _child(node, part)
        if node is _MISSING or node is None:
            return _MISSING
    return node


def get_dotted(cfg: Any, key: str, default: Any = None) -> Any:
    """The value at ``key``; ``default`` when a part is missing or the value is ``None``."""
    value = _walk(cfg, split_dotted(key))
    return default if value is _MISSING else value


def has_dotted(cfg: Any, key: str) -> bool:
    """Whether ``key`` leads to a value that is not ``None``."""
    return _walk(cfg, split_dotted(key)) is not _MISSING


def set_dotted(cfg: Any, key: str, value: Any) -> None:
    """Set ``key`` to ``value`` in place; the last part may be new, the ones before must exist.

    Raises:
        KeyError: a parent of ``key`` does not exist or is not a container.
    """
    parts = split_dotted(key)
    parent = _walk(cfg, parts[:-1])
    if not isinstance(parent, (MutableMapping, MutableSequence, DictConfig, ListConfig)):
        raise KeyError(
            f"cannot set config key '{key}': '{_SEP.join(parts[:-1])}' is not a config node"
        )
    last = parts[-1]
    if _is_sequence(parent):
        if not has_child(parent, last):
            raise KeyError(f"cannot set config key '{key}': index {last} is out of range")
        parent[int(last)] = value
    else:
        parent[last] = value


def updated_copy(node: Any, values: Mapping[str, Any]) -> Any:
    """A deep copy of ``node`` with each dotted key of ``values`` set; ``node`` is not touched.

    A copied ``DictConfig`` sub-node keeps its place under the original root, so relative
    (``"${..lr}"``) and absolute (``"${model.num_queries}"``) interpolations still resolve.

    Args:
        node: a config (sub-)node or a plain ``dict``/``list`` tree.
        values: dotted keys relative to ``node`` -> values (objects allowed, e.g. a model).
    """
    copied = copy.deepcopy(node)
    for key, value in values.items():
        set_dotted(copied, key, value)
    return copied
