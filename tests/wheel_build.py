"""Build the project's wheel from a copy of the sources (no build/ or egg-info in the checkout)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tiny_model import REPO

SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md")
TREES = ("mrdetr", "configs", "projects")


def build_wheel(tmp_path: Path) -> Path:
    """``pip wheel`` of a copy of the checkout in ``tmp_path``; returns the ``.whl`` file."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for tree in TREES:
        shutil.copytree(REPO / tree, src / tree, ignore=ignore)
    wheels = tmp_path / "wheels"
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation"]
    proc = subprocess.run(
        cmd + ["-w", str(wheels)], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = wheels.glob("mrdetr-*.whl")
    return wheel
