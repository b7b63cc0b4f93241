"""Atomic creation of a generated dataset folder (shared by the synthetic generators)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

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
    folder is swapped out and deleted only after the new one is in place.
    """
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.tmp-", dir=parent)
    try:
        write(tmp)
        if os.path.exists(output) and overwrite:
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.old-", dir=parent)
            os.replace(output, os.path.join(old, "data"))
            os.rename(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
