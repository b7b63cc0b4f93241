"""Execute Python config files whose relative imports resolve to other config files.

A config file is plain Python. ``from .base import model`` or ``from ..common.train import train``
inside it are resolved against the *file system*: the importing file's directory is the current
package, each leading dot beyond the first goes one directory up, and a dotted name maps to
``<dir>/name/parts.py`` (a directory acts as a package). This is done by running every config file
with its own ``__import__`` (in the file's ``__builtins__``), so the global import system and
``sys.modules`` are never touched and loading is thread-safe.

Within one top-level load each file runs once; every import hands out a deep copy of its dict-like
values, so a variant that edits an imported ``model`` never changes the base or another importer.
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import copy
import os
import traceback
import types
from collections.abc import Iterator, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig

__all__ = ["ConfigLoadError", "is_config_like", "run_config_file"]

_MODULE_PREFIX = "_mrdetr_config"
_FILE_MARKER = "__mrdetr_config_file__"
_PY_SUFFIX = ".py"
_CONFIG_FLAGS = {"allow_objects": True}


class ConfigLoadError(RuntimeError):
    """A config file failed to execute.

    Attributes:
        filename: the file that was being loaded (outermost).
        chain: files from the one that raised to the outermost importer.
        reason: ``"ExceptionType: message"`` of the original error.
    """

    def __init__(self, reason: str, chain: Sequence[str]) -> None:
        self.reason = reason
        self.chain = list(chain)
        self.filename = self.chain[-1]
        message = f"Failed to load config file '{self.filename}'"
        if len(self.chain) > 1:
            message += f" (error in '{self.chain[0]}', imported via {' <- '.join(self.chain)})"
        super().__init__(f"{message}: {reason}")


def is_config_like(value: Any) -> bool:
    """Whether ``value`` is a dict/list config value that imports must deep-copy."""
    return isinstance(value, (dict, list, DictConfig, ListConfig))


class _LoadContext:
    """State shared by all files executed for one top-level load."""

    def __init__(self) -> None:
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.running: list[str] = []


_ACTIVE: contextvars.ContextVar[_LoadContext | None] = contextvars.ContextVar(
    "mrdetr_config_load", default=None
)


@contextlib.contextmanager
def _load_context() -> Iterator[_LoadContext]:
    active = _ACTIVE.get()
    if active is not None:  # a nested load (``LazyConfig.load_rel``) shares the outer cache
        yield active
        return
    context = _LoadContext()
    token = _ACTIVE.set(context)
    try:
        yield context
    finally:
        _ACTIVE.reset(token)


def run_config_file(filename: str | os.PathLike[str]) -> dict[str, Any]:
    """Executes a Python config file and returns its module-level namespace.

    Args:
        filename: path of a ``.py`` config file.

    Returns:
        The file's global variables; dict-like values are private deep copies, plain dicts
        converted to ``DictConfig``.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigLoadError: the file (or a config file it imports) raised while executing.
    """
    path = os.path.abspath(os.fspath(filename))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file '{path}' does not exist.")
    with _load_context() as context:
        return _copy_namespace(_execute(path, context), path)


def _execute(path: str, context: _LoadContext) -> dict[str, Any]:
    """Runs ``path`` once per load context and returns its (cached, never handed out) namespace."""
    if path in context.namespaces:
        return context.namespaces[path]
    if path in context.running:
        cycle = " -> ".join([*context.running[context.running.index(path) :], path])
        raise ImportError(f"Circular import between config files: {cycle}")
    stem = os.path.splitext(os.path.basename(path))[0]
    module_builtins = dict(builtins.__dict__)
    module_builtins["__import__"] = _make_import(context)
    namespace: dict[str, Any] = {
        "__name__": f"{_MODULE_PREFIX}.{stem}",
        "__package__": _MODULE_PREFIX,
        "__file__": path,
        "__builtins__": module_builtins,
        _FILE_MARKER: path,
    }
    context.running.append(path)
    try:
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
        exec(compile(source, path, "exec"), namespace)  # noqa: S102 - config files are Python
    except ConfigLoadError as exc:  # an imported config file failed: extend the import chain
        raise ConfigLoadError(exc.reason, [*exc.chain, path]) from exc.__cause__
    except Exception as exc:
        line = _error_line(exc, path)
        where = "" if line is None else f" (line {line})"
        raise ConfigLoadError(f"{type(exc).__name__}{where}: {exc}", [path]) from exc
    finally:
        context.running.pop()
    context.namespaces[path] = namespace
    return namespace


def _error_line(exc: BaseException, path: str) -> int | None:
    """Line of ``path`` where ``exc`` was raised (the innermost frame in that file)."""
    if isinstance(exc, SyntaxError) and exc.filename == path:
        return exc.lineno
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == path]
    return frames[-1].lineno if frames else None


def _copy_namespace(namespace: dict[str, Any], path: str) -> dict[str, Any]:
    """Deep-copies the public dict-like values (in one call, so aliases between them survive).

    Plain dicts become ``DictConfig`` so importers can edit them by attribute
    (``train.output_dir = ...`` on ``train = dict(...)`` from a base file).
    """
    to_copy = {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_") and is_config_like(value)
    }
    try:
        copied = copy.deepcopy(to_copy)
    except Exception as exc:
        raise ConfigLoadError(
            f"cannot deep-copy its dict-like variables ({type(exc).__name__}: {exc}); config "
            "values must be copyable (no modules, locks or open files inside dicts).",
            [path],
        ) from exc
    for name, value in copied.items():
        if isinstance(value, dict):
            copied[name] = DictConfig(value, flags=dict(_CONFIG_FLAGS))
    return {**namespace, **copied}


def _make_import(context: _LoadContext) -> Any:
    def _config_import(
        name: str,
        globals: dict[str, Any] | None = None,  # noqa: A002 - the signature of __import__
        locals: Any = None,  # noqa: A002
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> Any:
        importer = (globals or {}).get(_FILE_MARKER)
        if level == 0 or importer is None:
            return builtins.__import__(name, globals, locals, fromlist or (), level)
        return _relative_import(importer, name, level, context)

    return _config_import


def _relative_import(
    importer: str, name: str, level: int, context: _LoadContext
) -> types.ModuleType:
    base = os.path.dirname(importer)
    for _ in range(level - 1):
        base = os.path.dirname(base)
    target = os.path.join(base, *name.split(".")) if name else base
    dotted = "." * level + name
    if os.path.isfile(target + _PY_SUFFIX):
        return _file_module(target + _PY_SUFFIX, context)
    if os.path.isdir(target):
        return _dir_module(target, context)
    raise ModuleNotFoundError(
        f"Config file '{importer}': cannot resolve relative import '{dotted}': neither "
        f"'{target}{_PY_SUFFIX}' nor directory '{target}' exists.",
        name=dotted,
        path=target,
    )


def _file_module(path: str, context: _LoadContext) -> types.ModuleType:
    namespace = _copy_namespace(_execute(path, context), path)
    module = types.ModuleType(namespace["__name__"])
    module.__dict__.update(namespace)
    return module


def _dir_module(directory: str, context: _LoadContext) -> types.ModuleType:
    """A package-like module for a directory; its files and folders load on attribute access."""
    module = types.ModuleType(f"{_MODULE_PREFIX}.{os.path.basename(directory)}")
    module.__file__ = directory
    module.__path__ = [directory]

    def _load_child(name: str) -> types.ModuleType:
        child = os.path.join(directory, name)
        if os.path.isfile(child + _PY_SUFFIX):
            loaded = _file_module(child + _PY_SUFFIX, context)
        elif os.path.isdir(child) and not name.startswith("__"):
            loaded = _dir_module(child, context)
        else:
            raise AttributeError(
                f"config directory '{directory}' has no file '{name}{_PY_SUFFIX}' or folder '{name}'"
            )
        setattr(module, name, loaded)
        return loaded

    module.__getattr__ = _load_child  # PEP 562: called for names not yet loaded
    return module
