"""Named datasets and their metadata (the registry users of detectron2 know)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any


class _DatasetCatalog:
    """Maps a dataset name to a function returning its list of dataset dicts."""

    def __init__(self) -> None:
        self._funcs: dict[str, Callable[[], list[dict]]] = {}

    def register(self, name: str, func: Callable[[], list[dict]]) -> None:
        """Register ``func`` (no arguments, returns ``list[dict]``) under ``name``."""
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register('{name}'): func must be callable")
        if name in self._funcs:
            raise KeyError(f"Dataset '{name}' is already registered")
        self._funcs[name] = func

    def get(self, name: str) -> list[dict]:
        """Call the registered function of ``name`` and return its dataset dicts."""
        if name not in self._funcs:
            raise KeyError(_unknown(name, "dataset", self._funcs))
        return self._funcs[name]()

    def list(self) -> list[str]:
        return list(self._funcs)

    def remove(self, name: str) -> None:
        self._funcs.pop(name)

    def __contains__(self, name: str) -> bool:
        return name in self._funcs


class Metadata:
    """Attribute bag of a dataset (``thing_classes``, ``thing_dataset_id_to_contiguous_id``,
    ``json_file``, ``image_root``, ``evaluator_type``, ...). Values are write-once (re-setting
    to a different value raises)."""

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_data", {})

    def __getattr__(self, key: str) -> Any:
        data = object.__getattribute__(self, "_data")
        if key in data:
            return data[key]
        raise AttributeError(
            f"Metadata of dataset '{self.name}' has no '{key}' (available: {sorted(data)})"
        )

    def __setattr__(self, key: str, value: Any) -> None:
        data = object.__getattribute__(self, "_data")
        if key in data and data[key] != value:
            raise ValueError(
                f"Metadata '{key}' of dataset '{self.name}' is already set to a different value"
            )
        data[key] = value

    def set(self, **kwargs: Any) -> Metadata:
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return object.__getattribute__(self, "_data").get(key, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(object.__getattribute__(self, "_data"))


class _MetadataCatalog:
    """Maps a dataset name to its ``Metadata`` (created on first access)."""

    def __init__(self) -> None:
        self._meta: dict[str, Metadata] = {}

    def get(self, name: str) -> Metadata:
        if name not in self._meta:
            self._meta[name] = Metadata(name)
        return self._meta[name]

    def list(self) -> list[str]:
        return list(self._meta)

    def remove(self, name: str) -> None:
        self._meta.pop(name, None)


def _unknown(name: str, what: str, known: dict) -> str:
    close = difflib.get_close_matches(name, list(known), n=5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"Unknown {what} '{name}'.{hint} Registered: {sorted(known)}"


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()
