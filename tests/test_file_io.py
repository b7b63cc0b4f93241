"""mrdetr.utils.file_io: the one atomic writer (temp file in the same folder, fsync, os.replace)."""

from __future__ import annotations

import os

import pytest

from mrdetr.utils import file_io
from mrdetr.utils.file_io import atomic_path, atomic_write, atomic_write_bytes, atomic_write_text


def test_text_bytes_and_callback_forms(tmp_path) -> None:
    atomic_write_text(tmp_path / "a.txt", "héllo\n")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    atomic_write(tmp_path / "c.bin", lambda f: f.write(b"abc"))
    atomic_write(tmp_path / "d.txt", lambda f: f.write("xyz"), text=True)
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "c.bin").read_bytes() == b"abc"
    assert (tmp_path / "d.txt").read_text() == "xyz"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.bin", "c.bin", "d.txt"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_interrupted_write_keeps_previous_content(tmp_path, error) -> None:
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")

    def crash(f) -> None:
        f.write(b"partial")
        raise error

    with pytest.raises(type(error)):
        atomic_write(target, crash)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"]  # the temporary file is gone


def test_path_form_keeps_extension_and_fsyncs_before_rename(tmp_path, monkeypatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def record_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc") else str(fd))
        real_fsync(fd)

    monkeypatch.setattr(file_io.os, "fsync", record_fsync)
    target = tmp_path / "clip.mp4"
    with atomic_path(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith("clip.mp4")
        assert os.path.basename(tmp).startswith(".")
        with open(tmp, "wb") as f:
            f.write(b"frames")
        assert not target.exists()  # nothing is visible before the block ends
    assert target.read_bytes() == b"frames" and os.listdir(tmp_path) == ["clip.mp4"]
    if os.path.exists("/proc"):
        assert synced[0] == tmp and synced[-1] == str(tmp_path)  # data, then the folder entry


def test_path_form_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "x.onnx"):
            pass
    with pytest.raises(ValueError, match="bad"):
        with atomic_path(tmp_path / "folder") as tmp:
            os.mkdir(tmp)
            (tmp_path / os.path.basename(tmp) / "part").write_text("1")
            raise ValueError("bad")
    assert os.listdir(tmp_path) == []


def test_temporary_names_are_unique(tmp_path) -> None:
    names = {file_io.temporary_sibling(tmp_path / "f.pth") for _ in range(50)}
    assert len(names) == 50
