"""Command-line ``key=value`` overrides of a config, as in ``train_net.py ... model.num_queries=900``.

Values are parsed with ``ast.literal_eval`` (numbers, lists, tuples, dicts, quoted strings, ``True``),
then ``null``/``none`` and ``true``/``false`` in any case, and otherwise kept as the raw string, so
``train.output_dir=/tmp/x`` needs no quotes. Only existing keys may be overridden; a leading ``+``
(``+train.new_key=1``) creates a key. A misspelt key raises :class:`ConfigKeyError` listing the
nearest valid dotted keys.

Each value is checked against the type of the key's current value before anything is changed
(:class:`ConfigValueError` names the key, the value and the expected type): a bool key takes a bool,
an int key an int (or an integral float such as ``1e4``), a float key a number, a list key a list or
tuple, a dict key a dict, and a string key a string (a number is kept as its text; a list of
strings is accepted, as for dataset names). ``null`` is accepted for every key; keys whose current
value is ``None`` or another kind of object are not checked.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from .access import has_child, split_dotted

__all__ = [
    "ConfigKeyError",
    "ConfigValueError",
    "apply_overrides",
    "config_key_paths",
    "parse_override_value",
]

_ADD_PREFIX = "+"
_MAX_SUGGESTIONS = 5
_SUGGESTION_CUTOFF = 0.6
_NULL_WORDS = ("null", "none", "~")
_BOOL_WORDS = {"true": True, "false": False}


class ConfigKeyError(KeyError):
    """An override names a key that is not in the config.

    Attributes:
        key: the dotted key that was not found.
        suggestions: the nearest existing dotted keys, best first.
    """

    def __init__(self, message: str, key: str, suggestions: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.key = key
        self.suggestions = list(suggestions)

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


class ConfigValueError(ValueError):
    """An override's value does not have the type of the key's current value.

    Attributes:
        key: the dotted key.
        value: the parsed value that was refused.
    """

    def __init__(self, message: str, key: str, value: Any) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


def parse_override_value(text: str) -> Any:
    """Parses the value side of ``key=value``.

    Args:
        text: the raw value, e.g. ``"900"``, ``"[1,2]"``, ``"null"``, ``"/tmp/x"``.

    Returns:
        The Python value: a literal when ``ast.literal_eval`` accepts it, ``None`` for
        ``null``/``none``/``~``, a bool for ``true``/``false`` (any case), else the string itself.
    """
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in _NULL_WORDS:
        return None
    if lowered in _BOOL_WORDS:
        return _BOOL_WORDS[lowered]
    try:
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return stripped


def config_key_paths(cfg: DictConfig | ListConfig, prefix: str = "") -> list[str]:
    """All dotted key paths of a config, containers and leaves (``"model"``, ``"model.lr"``, ...).

    Interpolations are not resolved; list elements appear as ``"key.0"``.
    """
    if isinstance(cfg, DictConfig):
        if cfg._is_none() or cfg._is_missing() or cfg._is_interpolation():
            return []
        items: Iterable[tuple[Any, Any]] = ((key, cfg._get_node(key)) for key in cfg.keys())
    elif isinstance(cfg, ListConfig):
        if cfg._is_none() or cfg._is_missing() or cfg._is_interpolation():
            return []
        items = ((index, cfg._get_node(index)) for index in range(len(cfg)))
    else:
        return []
    paths: list[str] = []
    for key, child in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        paths.append(path)
        paths.extend(config_key_paths(child, path))
    return paths


def apply_overrides(cfg: DictConfig, overrides: Iterable[str] | str) -> DictConfig:
    """Applies ``key=value`` overrides in place.

    Args:
        cfg: the config to edit (typically from ``LazyConfig.load``).
        overrides: strings such as ``"model.num_queries=900"``, ``"x.y=[1,2]"``,
            ``"+train.new_key=1"`` (the ``+`` allows creating a key that does not exist).

    Returns:
        ``cfg`` itself, edited.

    Raises:
        ConfigKeyError: a key (without ``+``) does not exist, or its path crosses a value that is
            not a config node; the message lists the nearest valid keys.
        ConfigValueError: a value does not have the type of the key's current value, or an
            override is not of the form ``key=value``.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    for override in overrides:
        if not isinstance(override, str) or "=" not in override:
            flag = isinstance(override, str) and override.startswith("-")
            note = " (put flags such as --resume before the key=value overrides)" if flag else ""
            raise ConfigValueError(
                f"Override {override!r} must have the form 'key=value'{note}.",
                str(override),
                override,
            )
        raw_key, raw_value = override.split("=", 1)
        key = raw_key.strip()
        allow_new = key.startswith(_ADD_PREFIX)
        key = key.lstrip(_ADD_PREFIX)
        try:
            parts = split_dotted(key)
        except ValueError as exc:
            raise ValueError(f"Override {override!r}: {exc}.") from None
        _check_key(cfg, override, key, parts, allow_new)
        value = parse_override_value(raw_value)
        if not allow_new:
            value = checked_value(cfg, override, key, value, raw_value.strip())
        try:
            OmegaConf.update(cfg, key, value, merge=True, force_add=allow_new)
        except Exception as exc:
            raise ValueError(f"Override {override!r} failed: {type(exc).__name__}: {exc}") from exc
    return cfg


def _check_key(cfg: DictConfig, override: str, key: str, parts: list[str], allow_new: bool) -> None:
    """Raises ConfigKeyError unless ``key`` exists (or may be created when ``allow_new``)."""
    node: Any = cfg
    for depth, part in enumerate(parts):
        if not isinstance(node, (DictConfig, ListConfig)) or node._is_none():
            prefix = ".".join(parts[:depth])
            raise ConfigKeyError(
                f"Override {override!r}: key '{key}' does not exist: '{prefix}' holds "
                f"{_describe(node)}, not a config node, so it has no key {part!r}.",
                key=key,
            )
        if not has_child(node, part):
            if allow_new and isinstance(node, DictConfig):
                return
            raise _missing_key_error(cfg, override, key, can_add=isinstance(node, DictConfig))
        if depth < len(parts) - 1:
            child_key: Any = int(part) if isinstance(node, ListConfig) else part
            try:
                node = node[child_key]
            except Exception:  # noqa: BLE001 - e.g. an unresolvable interpolation in between
                node = node._get_node(child_key)


def _missing_key_error(cfg: DictConfig, override: str, key: str, can_add: bool) -> ConfigKeyError:
    suggestions = difflib.get_close_matches(
        key, config_key_paths(cfg), n=_MAX_SUGGESTIONS, cutoff=_SUGGESTION_CUTOFF
    )
    if suggestions:
        hint = f"Did you mean: {', '.join(suggestions)}?"
    else:
        hint = f"Top-level keys are: {', '.join(map(str, cfg.keys()))}."
    if can_add:
        hint += f" (Prefix the key with '{_ADD_PREFIX}' to add a new key.)"
    return ConfigKeyError(
        f"Override {override!r}: key '{key}' does not exist in the config. {hint}",
        key=key,
        suggestions=suggestions,
    )


def _describe(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__name__} ({value!r})"


_UNSET = object()


def _type_name(value: Any) -> str:
    if isinstance(value, ListConfig):
        return "list"
    if isinstance(value, DictConfig):
        return "dict"
    return type(value).__name__


def checked_value(cfg: DictConfig, override: str, key: str, value: Any, text: str) -> Any:
    """``value`` as it will be stored at ``key``, or :class:`ConfigValueError` when its type does
    not fit the key's current value (rules in the module docstring).

    Args:
        cfg: the config.
        override: the whole ``key=value`` text (for the message).
        key: the dotted key (it exists).
        value: the parsed value.
        text: the raw value text (kept for a string key given a number).
    """
    current = OmegaConf.select(cfg, key, default=_UNSET, throw_on_resolution_failure=False)
    if value is None or current is None or current is _UNSET:
        return value
    if isinstance(current, bool):
        ok = isinstance(value, bool)
    elif isinstance(current, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(current, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(current, str):
        if isinstance(value, (int, float, bool)):
            value = text
        ok = isinstance(value, str) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        )
    elif isinstance(current, (ListConfig, list, tuple)):
        ok = isinstance(value, (list, tuple))
    elif isinstance(current, (DictConfig, dict)):
        ok = isinstance(value, dict)
    else:  # e.g. a class or function object: no textual form to compare with
        return value
    if not ok:
        raise ConfigValueError(
            f"Override {override!r}: {key} expects {_type_name(current)} (its current value is "
            f"{current!r}), got {_type_name(value)} {value!r}.",
            key=key,
            value=value,
        )
    return value
