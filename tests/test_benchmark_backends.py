"""``mrdetr-benchmark --backends ... --quick`` on the tiny model: bounded (< 60 s), one row per
backend with its ratio against PyTorch, and the float32 backends agree with PyTorch (score
difference < 1e-3)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from tiny_model import REPO, TINY_CONFIG

from mrdetr.tools._cli import run_cli
from mrdetr.tools.benchmark import main

pytest.importorskip("onnxruntime", reason="pip install 'mrdetr[export]' (onnxruntime)")
pytest.importorskip("onnx", reason="pip install 'mrdetr[export]' (onnx)")

QUICK_LIMIT_S = 60.0


def _rows(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("backend "))
    return {line.split()[0]: line.split()[1:] for line in lines[start + 1 :] if line.strip()}


@pytest.mark.openvino
def test_quick_backend_comparison_is_bounded_and_agrees(tmp_path):
    """Run as users run it, in its own process (OpenVINO's runtime then never shares a process
    with the rest of the suite)."""
    pytest.importorskip("openvino", reason="pip install 'mrdetr[openvino]'")
    argv = ["--config-file", str(TINY_CONFIG), "--backends", "pytorch", "onnxruntime",
            "openvino", "--openvino-precisions", "f32", "bf16", "--quick"]  # fmt: skip
    env = {**os.environ, "MRDETR_CACHE": str(tmp_path), "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mrdetr.tools.benchmark", *argv],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=5 * QUICK_LIMIT_S,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert elapsed < QUICK_LIMIT_S, f"--quick took {elapsed:.0f} s (process start included)"
    assert "2 images of 3x64x96" in out and "CPU AMX:" in out
    rows = _rows(out)
    assert list(rows)[:3] == ["pytorch", "onnxruntime", "openvino-f32"]
    assert rows["pytorch"][1] == "1.00x"
    for name in ("onnxruntime", "openvino-f32"):
        ms, ratio, diff = rows[name]
        assert float(ms) > 0 and ratio.endswith("x") and float(diff) < 1e-3
    assert len(rows) == 4 and list(rows)[3].startswith("openvino-bf16")


def test_pytorch_only_needs_no_export(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MRDETR_CACHE", str(tmp_path))
    argv = ["--config-file", str(TINY_CONFIG), "--backends", "pytorch", "--quick"]
    assert run_cli(main, argv) == 0, capsys.readouterr().err
    assert list(_rows(capsys.readouterr().out)) == ["pytorch"]
    assert not any(tmp_path.iterdir())
