"""Build hook: ship the LazyConfig files inside the wheel, so that a non-editable install can load
configs and model-zoo entries without a source checkout.

``configs/`` and every ``projects/<variant>/configs/`` are copied (``*.py`` only) to
``mrdetr/model_zoo/_config_root/`` keeping their layout, so the configs' relative imports
(``from ....configs.common... import``) resolve there exactly as in the checkout. An editable install
reads the checkout itself. Everything else is in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGED_ROOT = Path("mrdetr", "model_zoo", "_config_root")


def config_files() -> list[Path]:
    """Config files relative to the repository root: ``configs/**.py``, ``projects/*/configs/**.py``."""
    files = list((ROOT / "configs").rglob("*.py")) + list(
        (ROOT / "projects").glob("*/configs/**/*.py")
    )
    return sorted(f.relative_to(ROOT) for f in files if "__pycache__" not in f.parts)


class BuildPyWithConfigs(build_py):
    """``build_py`` that also copies the config trees into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for rel in config_files():
            target = Path(self.build_lib) / PACKAGED_ROOT / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target)


setup(cmdclass={"build_py": BuildPyWithConfigs})
