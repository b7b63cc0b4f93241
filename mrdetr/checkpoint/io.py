"""Checkpoint file I/O shared by every loader: read a file safely, unwrap its state dict, load it.

The layout converters (:mod:`.official`, :mod:`.swin`, :mod:`.resnet`) only rename keys; reading
files and loading tensors into a module with a shape check lives here, so the converters do not
import each other for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "IncompatibleKeys",
    "extract_state_dict",
    "load_checkpoint_file",
    "load_checked",
    "read_state_dict",
]


class IncompatibleKeys(NamedTuple):
    """Keys that did not load: ``missing_keys`` (in the model, not in the file) and
    ``unexpected_keys`` (in the file, not in the model)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def load_checkpoint_file(path: str | os.PathLike, *, trusted: bool = False) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    Args:
        path: file to read: a path, ``hf://<owner>/<repo>/<file>`` or a model-zoo name (see
            :func:`mrdetr.model_zoo.resolve_checkpoint`).
        trusted: allow full unpickling when ``weights_only`` refuses the file (only for files you trust).

    Raises:
        FileNotFoundError: the file does not exist.
        RuntimeError: the file is unreadable, or needs unpickling and ``trusted`` is False.
    """
    from mrdetr.model_zoo import resolve_checkpoint

    path = resolve_checkpoint(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with context below
        if not trusted:
            raise RuntimeError(
                f"cannot read checkpoint {path} with torch.load(weights_only=True): {exc}. "
                "If you trust this file, load it with trusted=True (it will be unpickled)."
            ) from None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:  # noqa: BLE001
            raise RuntimeError(f"cannot read checkpoint {path}: {exc2}") from None


def extract_state_dict(obj) -> dict[str, Tensor]:
    """Unwrap ``{"model": state_dict, ...}`` (official and our checkpoints) or return a plain state dict."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError("checkpoint does not hold a state dict (a mapping of names to tensors)")
    return dict(obj)


def read_state_dict(
    state_dict_or_path: Mapping[str, Tensor] | str | os.PathLike, *, trusted: bool = False
) -> dict[str, Tensor]:
    """The state dict of a file path, of ``{"model": state_dict, ...}`` or of a state dict itself.

    Args:
        state_dict_or_path: what to read.
        trusted: see :func:`load_checkpoint_file`.
    """
    obj = (
        load_checkpoint_file(state_dict_or_path, trusted=trusted)
        if isinstance(state_dict_or_path, (str, os.PathLike))
        else state_dict_or_path
    )
    return extract_state_dict(obj)


def load_checked(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    what: str = "checkpoint",
    prefix: str = "",
) -> IncompatibleKeys:
    """Non-strict ``module.load_state_dict`` after checking that every shared key has the same shape.

    Args:
        module: the module to fill.
        state_dict: tensors in ``module``'s own key names.
        what: the name of the source in the error message (``"Swin checkpoint"``).
        prefix: put in front of every key of the error message and of the returned keys (a
            backbone loaded on its own reports ``backbone.*`` names).

    Returns:
        The missing and unexpected keys, with ``prefix``.

    Raises:
        ValueError: naming every key whose shape differs from the module's, with both shapes.
    """
    own = module.state_dict()
    mismatched = [
        f"{prefix}{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and own[k].shape != v.shape
    ]
    if mismatched:
        raise ValueError(f"{what} shapes do not match the model:\n  " + "\n  ".join(mismatched))
    with torch.no_grad():
        result = module.load_state_dict(state_dict, strict=False)
    return IncompatibleKeys(
        [prefix + k for k in result.missing_keys], [prefix + k for k in result.unexpected_keys]
    )
