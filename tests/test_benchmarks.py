"""The benchmark scripts run (bounded forms): ``gpu_check.sh --dry-run`` and
``route_study_gpu.sh --dry-run`` on the CPU, and
``bench_model.py --quick`` with its same-run peer, FLOPs, GEMM rate and machine line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _dry_run(script: str, out: Path, **env: str) -> subprocess.CompletedProcess:
    """``bash benchmarks/SCRIPT --dry-run OUT`` with this Python and the extra environment."""
    return subprocess.run(
        ["bash", str(REPO / "benchmarks" / script), "--dry-run", str(out)],
        env=dict(os.environ, PYTHON=sys.executable, **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_gpu_check_dry_run_writes_a_summary(tmp_path):
    """The summary and a tarball of the step logs, nothing else, in the output folder (the device
    tool brings back at most 8 files); the data and run folders go to $WORK."""
    import tarfile

    out = tmp_path / "out"
    proc = _dry_run("gpu_check.sh", out, WORK=str(tmp_path / "work"))
    summary = (out / "gpu_check.md").read_text()
    assert proc.returncode == 0, proc.stdout + summary[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.md", "gpu_check_logs.tar.gz"]
    with tarfile.open(out / "gpu_check_logs.tar.gz") as logs:
        assert "logs/quickstart.log" in logs.getnames()
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


def test_route_study_gpu_dry_run_trains_part_e_and_writes_its_json(tmp_path):
    """``route_study_gpu.sh --dry-run``: part e's pair (the overrides route_study.sh uses, from the
    shared route_study_parts.sh) trains 2 iterations on the CPU, is diagnosed and lands in one JSON."""
    import json

    out = tmp_path / "out"
    proc = _dry_run("route_study_gpu.sh", out, RUNS=str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    study = json.loads((out / "e_d256.json").read_text())
    assert study["device"] == "cpu" and study["tag"] == "e_d256"
    assert "model.embed_dim=256" in study["opts"]
    assert "model.transformer.decoder.num_layers=6" in study["opts"]
    assert [r["setting"] for r in study["runs"]] == ["primary only", "all three routes"]
    for run in study["runs"]:
        assert run["complete"] and run["curve"][-1][0] in (1, 2)
        (report,) = run["diagnostics"].values()
        assert set(report["routes"]) == {"primary", "instruct", "sep_ffn"}
    assert (out / "e_d256.md").is_file() and (out / "route_study_gpu.log").is_file()
    assert (
        "source benchmarks/route_study_parts.sh" in (REPO / "benchmarks/route_study.sh").read_text()
    )


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
