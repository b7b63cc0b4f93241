"""Crash-safe file writes: temporary file in the same folder, fsync, then ``os.replace``.

A reader of the destination sees either the previous complete file or the new complete file, never
a half-written one, even when the writer is killed or the machine loses power: the data is fsynced
before the rename and the folder entry is fsynced after it. The temporary name is unique per call
(``.tmp-<pid>-<random>-<name>``: hidden, same extension as the destination so tools that pick a
format from the file name still work) and is removed on any error, ``KeyboardInterrupt`` included.

Every atomic writer of the library goes through :func:`atomic_path`:

- :func:`atomic_write` hands a callback an open file (``torch.save(obj, f)``, ``json.dump(d, f)``);
- :func:`atomic_write_bytes` / :func:`atomic_write_text` write a value;
- :func:`atomic_path` itself yields the temporary path, for writers that open the file themselves
  (``torch.onnx.export``, ``cv2.VideoWriter``, a temporary folder that is filled and swapped in).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import IO, Any

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "temporary_sibling",
]

_TMP_PREFIX = ".tmp-"
_RANDOM_CHARS = 8


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:  # e.g. folders cannot be opened on this platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_sibling(path: str | os.PathLike) -> str:
    """A fresh hidden name in the folder of ``path`` that ends like ``path`` (nothing is created)."""
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    token = uuid.uuid4().hex[:_RANDOM_CHARS]
    return os.path.join(directory, f"{_TMP_PREFIX}{os.getpid()}-{token}-{name}")


def _fsync_file(path: str) -> None:
    if os.path.isfile(path):
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path; on normal exit it is fsynced and renamed to ``path``.

    The caller creates the temporary file (or folder) itself. On an exception inside the block the
    temporary is removed and ``path`` keeps its previous content.

    Args:
        path: destination; its folder must exist.

    Yields:
        The temporary path, in the same folder as ``path``.

    Raises:
        FileNotFoundError: the block did not create the temporary file.
    """
    final = os.path.abspath(os.fspath(path))
    tmp = temporary_sibling(final)
    try:
        yield tmp
        if not os.path.lexists(tmp):
            raise FileNotFoundError(f"atomic write of '{final}': nothing was written to '{tmp}'")
        _fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise
    fsync_dir(os.path.dirname(final))


def atomic_write(
    path: str | os.PathLike,
    write_fn: Callable[[IO[Any]], Any],
    *,
    text: bool = False,
    encoding: str = "utf-8",
) -> None:
    """Write ``path`` atomically through ``write_fn(file)``.

    Args:
        path: destination file; its folder must exist.
        write_fn: receives the open temporary file and fills it.
        text: open the file in text mode (``encoding``) instead of binary mode.
        encoding: text encoding when ``text``.
    """
    with atomic_path(path) as tmp:
        mode = "x" if text else "xb"
        with open(tmp, mode, encoding=encoding if text else None) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, content: str, encoding: str = "utf-8") -> None:
    """Write the string ``content`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(content), text=True, encoding=encoding)
