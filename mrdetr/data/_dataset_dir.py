"""Atomic creation of a generated dataset folder (shared by the synthetic generators)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

from mrdetr.utils.file_io import atomic_path, temporary_sibling

__all__ = ["ensure_generated", "prepare_output", "write_atomically"]


def prepare_output(output: str | os.PathLike, overwrite: bool) -> str:
    """Absolute path of ``output``; refuses an existing non-empty folder unless ``overwrite``."""
    output = os.path.abspath(os.fspath(output))
    if os.path.exists(output) and os.listdir(output) and not overwrite:
        raise FileExistsError(
            f"'{output}' already exists and is not empty; pass overwrite=True (--overwrite) to replace it"
        )
    return output


def write_atomically(output: str, overwrite: bool, write: Callable[[str], None]) -> None:
    """Run ``write(tmp)`` on a temporary sibling folder, then rename it to ``output``.

    An interrupted run never leaves a half dataset at ``output``; with ``overwrite`` an existing
    folder is moved aside just before the rename and deleted only after the new one is in place.
    """
    os.makedirs(os.path.dirname(output), exist_ok=True)
    old = temporary_sibling(output) if overwrite and os.path.exists(output) else None
    with atomic_path(output) as tmp:
        os.mkdir(tmp)
        write(tmp)
        if old is not None:
            os.replace(output, old)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def ensure_generated(
    path: str, is_complete: Callable[[str], bool], generate: Callable[..., Any], **kwargs: Any
) -> str:
    """Return ``path``, calling ``generate(path, **kwargs)`` first unless it is complete.

    A concurrent process that finishes the same folder first is not an error.
    """
    if is_complete(path):
        return path
    try:
        generate(path, **kwargs)
    except OSError:
        if not is_complete(path):
            raise
    return path
