"""A user's own data from a plain install to predictions: the wheel is built and installed into a
fresh virtual environment outside the checkout (``--system-site-packages`` for torch, the wheel with
``--no-deps``), and every command of ``docs/custom_data.md`` runs there as written: make a 3-class
COCO-format folder, train with ``mrdetr-train``, ``--eval-only``, ``mrdetr-demo``, the Predictor,
``mrdetr-export-onnx``. The doc's config gets a test-only tail that shrinks the run (4 iterations,
one small image size) so that the whole test stays within a few minutes on 2 CPU cores."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_model import REPO
from wheel_build import build_wheel

from mrdetr.tools.entry_points import COMMANDS

DOC = REPO / "docs" / "custom_data.md"
BLOCK = re.compile(r"<!-- test: (run|python|file (\S+)) -->\n```(?:bash|python)\n(.*?)```", re.S)
TIMEOUT_S = 300
# appended to the doc's my_config.py: a tiny run (one image size: every new input shape costs a
# oneDNN kernel build on CPU)
TEST_TAIL = """
train.max_iter = 4
train.eval_period = 4
train.checkpointer.period = 4
train.log_period = 2
train.eval_at_start = False
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
dataloader.train.mapper.augmentation.min_sizes = [96]
dataloader.train.mapper.augmentation.max_size = 128
dataloader.train.mapper.augmentation.crop_prob = 0.0
dataloader.test.mapper.augmentation.min_size = 96
dataloader.test.mapper.augmentation.max_size = 128
"""


def _doc_steps() -> list[tuple[str, str, str]]:
    """(kind, file name, text) of each tested block of the doc, in order."""
    return [
        (m.group(1).split()[0], m.group(2) or "", m.group(3))
        for m in BLOCK.finditer(DOC.read_text())
    ]


class _Venv:
    def __init__(self, root: Path, work: Path):
        self.bin = root / "bin"
        self.work = work
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MRDETR_CONFIG_ROOT")
        }
        self.env["PATH"] = f"{self.bin}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["HF_HUB_OFFLINE"] = "1"
        self.env["VIRTUAL_ENV"] = str(root)

    def run(self, command: str, ok: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["bash", "-c", command], cwd=self.work, env=self.env, capture_output=True,
            text=True, timeout=TIMEOUT_S,
        )  # fmt: skip
        if ok:
            assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> _Venv:
    tmp = tmp_path_factory.mktemp("e2e")
    wheel = build_wheel(tmp)
    root = tmp / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(root)],
        check=True,
        timeout=TIMEOUT_S,
    )
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "--no-deps", "-q", str(wheel)]
    proc = subprocess.run(pip, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    work = tmp / "work"
    work.mkdir()
    return _Venv(root, work)


@pytest.mark.slow
def test_console_commands_of_the_installed_wheel(venv):
    where = venv.run('python -c "import mrdetr; print(mrdetr.__file__)"').stdout.strip()
    assert where.startswith(str(venv.bin.parent)), where  # the wheel, not the checkout
    for command in COMMANDS:
        assert (venv.bin / command).is_file(), command
        assert "usage:" in venv.run(f"{command} --help").stdout
    assert "--eval-only" in venv.run("python -m mrdetr.tools.train_net --help").stdout


@pytest.mark.slow
def test_custom_data_doc_from_dataset_to_onnx(venv):
    steps = _doc_steps()
    assert [k for k, _, _ in steps] == ["run", "file", "run", "run", "python", "run"]
    work = venv.work
    for kind, name, text in steps:
        if kind == "file":
            (work / name).write_text(text + TEST_TAIL)
            # a wrong class count stops before iteration 0 with the documented error line
            wrong = venv.run(
                "mrdetr-train --config-file my_config.py model.num_classes=6", ok=False
            )
            assert wrong.returncode != 0
            assert (
                "error: model.num_classes=6 but dataset 'my_train' (dataloader.train.dataset) "
                "has 3 classes" in wrong.stderr
            ), wrong.stderr[-3000:]
            assert "set model.num_classes=3" in wrong.stderr
            assert not (work / "output/my_run/metrics.json").exists()
        elif kind == "python":
            (work / "predict.py").write_text(text)
            out = venv.run("python predict.py").stdout
            assert "tensor(" in out
        else:
            for line in text.strip().splitlines():
                venv.run(line)
    run = work / "output" / "my_run"
    assert (run / "model_final.pth").is_file()
    records = [json.loads(line) for line in (run / "metrics.json").read_text().splitlines()]
    assert any("total_loss" in r for r in records)
    assert (run / "inference" / "coco_instances_results.json").is_file()
    names = json.loads((work / "my_data/annotations/instances_train.json").read_text())[
        "categories"
    ]
    assert len(names) == 3
    assert sorted(p.name for p in (work / "predictions").iterdir()) == sorted(
        p.name for p in (work / "my_data" / "val").iterdir()
    )
    assert (work / "my_model.onnx").stat().st_size > 0
