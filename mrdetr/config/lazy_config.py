"""``LazyConfig``: load Python/YAML config files, save them as YAML, apply command-line overrides."""

from __future__ import annotations

import enum
import inspect
import os
import pathlib
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from .lazy import TARGET_KEY, target_to_str
from .loader import ConfigLoadError, run_config_file
from .overrides import ConfigKeyError, apply_overrides

__all__ = ["LazyConfig"]

_PY_SUFFIXES = (".py",)
_YAML_SUFFIXES = (".yaml", ".yml")
_CONFIG_FLAGS = {"allow_objects": True}
_YAML_SCALARS = (str, int, float, bool, bytes, type(None))


class LazyConfig:
    """Static helpers to load, save and override LazyCall configs (the detectron2 API)."""

    @staticmethod
    def load(
        filename: str | os.PathLike[str], keys: str | Sequence[str] | None = None
    ) -> DictConfig | Any:
        """Loads a ``.py`` or ``.yaml`` config file.

        For a Python file, the module-level variables that are dicts, ``DictConfig`` or
        ``ListConfig`` (``model``, ``train``, ``optimizer``, ``dataloader``, ``lr_multiplier``, ...)
        and whose names do not start with ``_`` are kept; relative imports inside the file load
        other config files (see :mod:`mrdetr.config.loader`).

        Args:
            filename: path of the config file.
            keys: ``None`` for the whole config, one key name for that value, or a sequence of key
                names for a tuple of values.

        Returns:
            A ``DictConfig`` (root flagged ``allow_objects``), or the value(s) selected by ``keys``.

        Raises:
            FileNotFoundError: the file does not exist.
            ConfigLoadError: the file (or a file it imports) fails to execute or parse.
            ValueError: the file has an unsupported extension.
            ConfigKeyError: one of ``keys`` is not in the config.
        """
        path = os.path.abspath(os.fspath(filename))
        suffix = os.path.splitext(path)[1].lower()
        if suffix in _PY_SUFFIXES:
            namespace = run_config_file(path)
            content = {
                name: value
                for name, value in namespace.items()
                if not name.startswith("_") and isinstance(value, (dict, DictConfig, ListConfig))
            }
        elif suffix in _YAML_SUFFIXES:
            content = _load_yaml(path)
        else:
            raise ValueError(
                f"Config file '{path}' has unsupported extension {suffix!r}; expected one of "
                f"{_PY_SUFFIXES + _YAML_SUFFIXES}."
            )
        cfg = DictConfig(content, flags=dict(_CONFIG_FLAGS))
        if keys is None:
            return cfg
        if isinstance(keys, str):
            return _select_key(cfg, keys, path)
        return tuple(_select_key(cfg, key, path) for key in keys)

    @staticmethod
    def load_rel(
        filename: str | os.PathLike[str], keys: str | Sequence[str] | None = None
    ) -> DictConfig | Any:
        """Like :meth:`load`, with ``filename`` relative to the directory of the calling file.

        Meant for use inside config files: ``model = LazyConfig.load_rel("../common/model.py",
        "model")``.
        """
        frame = inspect.currentframe()
        caller = frame.f_back if frame is not None else None
        caller_file = caller.f_code.co_filename if caller is not None else ""
        del frame, caller
        if not os.path.isfile(caller_file):
            raise RuntimeError(
                f"LazyConfig.load_rel({os.fspath(filename)!r}) must be called from a file on disk; "
                f"the caller is {caller_file!r}. Use LazyConfig.load with a full path instead."
            )
        path = os.path.join(os.path.dirname(caller_file), os.fspath(filename))
        return LazyConfig.load(path, keys)

    @staticmethod
    def save(cfg: DictConfig | dict[str, Any], filename: str | os.PathLike[str]) -> None:
        """Writes a config as YAML, readable again by :meth:`load`.

        Callable ``_target_`` values become dotted paths; interpolations are kept as written
        (``"${..num_queries}"``) so ties survive the round trip. Values YAML cannot hold (objects,
        ``functools.partial``, callables outside ``_target_``, unlocatable targets) are written as
        their ``repr`` with a warning; saving never fails because of them.

        Args:
            cfg: the config to save.
            filename: destination ``.yaml`` path; parent folders are created; the write is atomic.
        """
        if not isinstance(cfg, DictConfig):
            cfg = DictConfig(cfg, flags=dict(_CONFIG_FLAGS))
        container = OmegaConf.to_container(cfg, resolve=False)
        replaced: list[str] = []
        clean = _to_yaml_value(container, "", replaced)
        if replaced:
            warnings.warn(
                f"LazyConfig.save('{os.fspath(filename)}'): {len(replaced)} value(s) cannot be "
                f"written as YAML and were saved as their repr, so they will not load back as the "
                f"same objects: {'; '.join(replaced)}",
                UserWarning,
                stacklevel=2,
            )
        _atomic_write(os.fspath(filename), OmegaConf.to_yaml(clean))

    @staticmethod
    def apply_overrides(cfg: DictConfig, overrides: Iterable[str] | str) -> DictConfig:
        """Applies ``key=value`` overrides in place; see :func:`mrdetr.config.overrides.apply_overrides`."""
        return apply_overrides(cfg, overrides)


def _load_yaml(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file '{path}' does not exist.")
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:
        raise ConfigLoadError(f"{type(exc).__name__}: {exc}", [path]) from exc
    if not isinstance(loaded, DictConfig):
        raise ConfigLoadError(
            f"the top level must be a mapping of names to configs, got a {type(loaded).__name__}.",
            [path],
        )
    return OmegaConf.to_container(loaded, resolve=False)


def _select_key(cfg: DictConfig, key: str, path: str) -> Any:
    if key not in cfg.keys():
        raise ConfigKeyError(
            f"Config file '{path}' has no top-level key {key!r}; it has: "
            f"{', '.join(map(str, cfg.keys())) or 'nothing'}.",
            key=key,
        )
    return cfg[key]


def _to_yaml_value(value: Any, path: str, replaced: list[str]) -> Any:
    """Copy of ``value`` that ``OmegaConf.to_yaml`` accepts; records replaced paths."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item_path = f"{path}.{key}" if path else str(key)
            if key == TARGET_KEY and callable(item):
                dotted = target_to_str(item)
                if dotted is not None:
                    out[key] = dotted
                    continue
            out[key] = _to_yaml_value(item, item_path, replaced)
        return out
    if isinstance(value, (list, tuple)):
        return [_to_yaml_value(item, f"{path}.{i}", replaced) for i, item in enumerate(value)]
    if isinstance(value, _YAML_SCALARS):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, pathlib.PurePath):
        return str(value)
    replaced.append(f"{path or '<root>'} ({type(value).__name__})")
    return repr(value)


def _readable_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 minus the process umask (0644 by default)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(filename: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(filename))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp_config_", suffix=".yaml")
    try:
        os.chmod(tmp_path, _readable_file_mode())  # mkstemp makes it private (0600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp_path, filename)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
