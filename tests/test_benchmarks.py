"""The benchmark scripts run (bounded forms): ``gpu_check.sh --dry-run`` on the CPU and
``bench_model.py --quick`` with its same-run peer, FLOPs, GEMM rate and machine line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_a_summary(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu_check.sh"), "--dry-run", str(tmp_path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = (tmp_path / "gpu_check.md").read_text()
    assert proc.returncode == 0, proc.stdout + summary[-4000:]
    for name in (
        "self_check",
        "cuda_tests",
        "bench_msda",
        "bench_model",
        "synthetic_data",
        "quickstart",
    ):
        assert re.search(rf"## {name}\n\n`[^`]*` — exit 0, \d+ s", summary), name
    assert "Triton self-check on cpu, torch.bfloat16:" in summary
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in summary  # the quick start trained and evaluated


def test_bench_model_quick_times_the_peer_in_the_same_run():
    pytest.importorskip("transformers", reason="the peer needs the bench extra")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/bench_model.py"), "--quick"],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"^CPU .+ ISA .+ AMX (yes|no)", out, re.M)
    assert "peer: HF DeformableDetr (two-stage, box refine)" in out
    rows = {
        row[1]: row
        for row in (
            line.strip("|").split("|") for line in out.splitlines() if line.startswith("| float32")
        )
    }
    rows = {k.strip(): [c.strip() for c in v] for k, v in rows.items()}
    assert set(rows) == {
        "ours eval", "ours eval, all 3 routes", "peer eval", "ours train step", "peer train step"
    }  # fmt: skip
    ours, peer = rows["ours eval"], rows["peer eval"]
    # both models are R50-sized two-stage Deformable DETRs at the same shape: FLOPs within 30 %
    assert 0.7 < float(ours[3]) / float(peer[3]) < 1.3
    assert float(ours[4]) > 0  # the GEMM rate was measured
    # the ratio column is peer time / ours, from this run's medians
    ratio = float(peer[2]) / float(ours[2])
    assert ours[7] == f"{ratio:.2f}x" or abs(float(ours[7][:-1]) - ratio) < 0.02
