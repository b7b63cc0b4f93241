"""The route-ablation script runs end to end (bounded: 2 settings, 2 iterations) and writes its
Markdown table and PNG plot."""

from __future__ import annotations

import sys

from tiny_model import REPO

from mrdetr.data.synthetic import generate_synthetic_dataset

sys.path.insert(0, str(REPO / "benchmarks"))
import ablation_routes  # noqa: E402


def test_ablation_script_writes_table_and_plot(tmp_path, monkeypatch):
    generate_synthetic_dataset(
        tmp_path / "datasets" / "synthetic", num_train=4, num_val=2, image_size=64, progress=False
    )
    monkeypatch.setenv("MRDETR_DATASETS", str(tmp_path / "datasets"))
    out = tmp_path / "ablation"
    ablation_routes.main(
        [
            "--iters",
            "2",
            "--eval-every",
            "2",
            "--output",
            str(out),
            "--settings",
            "primary only",
            "++ (route-aware MoE)",
        ]  # fmt: skip
    )
    table = (out / "ablation_routes.md").read_text()
    assert "| primary only |" in table and "| ++ (route-aware MoE) |" in table
    assert (out / "ablation_routes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --reuse keeps the finished runs: nothing is trained again
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ablation_routes, "run_setting", no_training)
    ablation_routes.main(
        ["--iters", "2", "--eval-every", "2", "--output", str(out), "--reuse"]
        + ["--settings", "primary only", "++ (route-aware MoE)"]
    )
    assert (out / "ablation_routes.md").read_text() == table
