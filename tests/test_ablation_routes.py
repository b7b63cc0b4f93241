"""The route-study script runs end to end (bounded: 2 settings, 2 iterations, diagnostics of each kept
checkpoint), writes its JSON, and its Markdown tables and plot regenerate from that JSON alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tiny_model import REPO

from mrdetr.data.synthetic import generate_synthetic_dataset

sys.path.insert(0, str(REPO / "benchmarks"))
import ablation_routes  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def test_ablation_script_writes_json_table_and_plot(tmp_path, monkeypatch):
    generate_synthetic_dataset(
        tmp_path / "datasets" / "synthetic", num_train=4, num_val=2, image_size=64, progress=False
    )
    monkeypatch.setenv("MRDETR_DATASETS", str(tmp_path / "datasets"))
    out = tmp_path / "study"
    args = ["--iters", "2", "--eval-every", "2", "--output", str(out), "--tag", "t", "--diagnose",
            "--settings", "primary only", "++ (route-aware MoE)",
            "--opts", "dataloader.test.mapper.augmentation.min_size=64"]  # fmt: skip
    ablation_routes.main(args)
    study = json.loads((out / "t.json").read_text())
    assert study["opts"] == ["dataloader.test.mapper.augmentation.min_size=64"]
    assert [r["setting"] for r in study["runs"]] == ["primary only", "++ (route-aware MoE)"]
    for run in study["runs"]:
        assert run["curve"][-1][0] in (1, 2)  # the final evaluation
        (report,) = run["diagnostics"].values()  # one kept checkpoint: model_0000001.pth
        assert set(report["routes"]) == {"primary", "instruct", "sep_ffn"}
        assert (out / run["dir"].split("/")[-1] / "model_0000001.pth").is_file()
    table = (out / "t.md").read_text()
    assert "| primary only | 1 |" in table and "| ++ (route-aware MoE) | 1 |" in table
    assert "primary AP, NMS" in table and "primary dups / object" in table
    assert (out / "t.png").read_bytes()[:8] == PNG

    # --reuse keeps the finished runs and their cached diagnostics: nothing runs again
    def nothing_again(*args, **kwargs):
        raise AssertionError("a finished run was trained or diagnosed again")

    monkeypatch.setattr(ablation_routes, "run_setting", nothing_again)
    monkeypatch.setattr(ablation_routes.subprocess, "run", nothing_again)
    ablation_routes.main(args + ["--reuse"])
    again = json.loads((out / "t.json").read_text())
    assert [r["curve"] for r in again["runs"]] == [r["curve"] for r in study["runs"]]
    assert [r["diagnostics"] for r in again["runs"]] == [r["diagnostics"] for r in study["runs"]]

    # where the run folders are gone, a complete JSON is enough: nothing runs
    import shutil

    for run in study["runs"]:
        shutil.rmtree(run["dir"])
    ablation_routes.main(args + ["--skip-if-complete"])
    assert json.loads((out / "t.json").read_text())["runs"] == again["runs"]

    # the tables and the plot come from the JSON alone
    table = (out / "t.md").read_text()
    (out / "t.md").unlink()
    (out / "t.png").unlink()
    ablation_routes.main(["--report", str(out / "t.json")])
    assert (out / "t.md").read_text() == table
    assert (out / "t.png").read_bytes()[:8] == PNG


def test_diagnostics_read_the_run_checkpoint_over_a_warm_start_override(tmp_path, monkeypatch):
    """A study started from a warm start (``--opts train.init_checkpoint=W``) must diagnose each
    run's own checkpoints, not W: the checkpoint override comes after the study's overrides."""
    import argparse

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model_0000174.pth").write_bytes(b"")
    (run_dir / "model_0000200.pth").write_bytes(b"")  # a stop signal's: not an evaluation point
    calls = []

    def fake_report(cmd, **kwargs):
        calls.append(cmd)
        Path(cmd[cmd.index("--json") + 1]).write_text('{"routes": {}}')
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(ablation_routes.subprocess, "run", fake_report)
    args = argparse.Namespace(
        nms=0.7,
        threads=1,
        eval_every=175,
        opts=["train.init_checkpoint=warm.pth", "model.num_queries=300"],
    )
    reports = ablation_routes.diagnose_run(run_dir, REPO / "cfg.py", ["primary"], args)
    assert reports == {"175": {"routes": {}}}
    (cmd,) = calls
    overrides = cmd[cmd.index("--opts") + 1 :]
    checkpoints = [o.split("=", 1)[1] for o in overrides if o.startswith("train.init_checkpoint=")]
    assert checkpoints[-1] == str(run_dir / "model_0000174.pth")  # the last override wins
    assert "model.num_queries=300" in overrides


def test_warm_start_weights_keeps_only_the_named_parts(tmp_path):
    """Part d's warm start: a checkpoint cut down to backbone/neck/encoder loads into a fresh model
    with exactly those weights replaced, and a prefix that matches nothing is an error."""
    import torch
    import warm_start_weights
    from tiny_model import tiny_model

    source = tiny_model()
    torch.save({"model": source.state_dict(), "iteration": 3}, tmp_path / "full.pth")
    out = tmp_path / "warm.pth"
    assert warm_start_weights.main([str(tmp_path / "full.pth"), str(out)]) == 0
    kept = torch.load(out, weights_only=True)["model"]
    assert kept and all(k.startswith(warm_start_weights.DEFAULT_PREFIXES) for k in kept)
    assert any(k.startswith("transformer.encoder.") for k in kept)

    fresh = tiny_model(seed=1)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    fresh.load_state_dict(kept, strict=False)
    after = fresh.state_dict()
    for k, v in after.items():
        expected = source.state_dict()[k] if k in kept else before[k]
        assert torch.equal(v, expected), k
    assert (
        warm_start_weights.main([str(tmp_path / "full.pth"), str(out), "--prefixes", "nope."]) == 2
    )


def _output_dir(cmd: list[str]) -> Path:
    """The run folder a faked ``train_net.py`` command was given (``train.output_dir=...``)."""
    return Path(next(a.split("=", 1)[1] for a in cmd if a.startswith("train.output_dir=")))


def test_a_stopped_study_keeps_its_evaluations_and_a_new_machine_reuses_finished_runs(
    tmp_path, monkeypatch
):
    """A run stopped by a signal (train_net's 143) leaves its evaluations so far in the JSON, marked
    incomplete; on a machine without the run folders, ``--reuse`` takes the finished runs from the
    JSON and trains only the rest. The trainer is replaced by a writer of ``metrics.json``."""
    import pytest

    trained, stop, stop_status = [], {"all three routes"}, 143

    def fake_train(cmd, **kwargs):
        out = _output_dir(cmd)
        setting = "primary only" if 'model.train_routes=["primary"]' in cmd else "all three routes"
        trained.append(setting)
        evaluations = [1] if setting in stop else [1, 3]
        lines = [json.dumps({"iteration": i, "bbox/AP": 10.0 * i, "bbox/AP50": 20.0 * i})
                 for i in evaluations] + [json.dumps({"iteration": 0, "time": 0.5})]  # fmt: skip
        (out / "metrics.json").write_text("\n".join(lines) + "\n")
        return subprocess.CompletedProcess(cmd, stop_status if setting in stop else 0)

    monkeypatch.setattr(ablation_routes.subprocess, "run", fake_train)
    out = tmp_path / "study"
    args = ["--iters", "4", "--eval-every", "2", "--output", str(out), "--tag", "t",
            "--settings", "primary only", "all three routes"]  # fmt: skip
    with pytest.raises(SystemExit, match="stopped part-way"):
        ablation_routes.main(args)
    study = json.loads((out / "t.json").read_text())
    runs = {r["setting"]: r for r in study["runs"]}
    assert runs["primary only"]["complete"] and runs["primary only"]["curve"][-1][0] == 3
    assert not runs["all three routes"]["complete"]
    assert runs["all three routes"]["curve"] == [[1, 10.0, 20.0]]
    assert "all three routes (stopped part-way: last evaluation at 1)" in (out / "t.md").read_text()
    with pytest.raises(SystemExit) as check:
        ablation_routes.main(args + ["--check-complete"])
    assert check.value.code == 1
    # killed by SIGTERM before train_net's handlers were up (status -15): the same, no traceback
    stop_status = -15
    with pytest.raises(SystemExit, match="stopped part-way"):
        ablation_routes.main(args + ["--reuse"])
    assert not json.loads((out / "t.json").read_text())["runs"][1]["complete"]

    # a new machine: no run folders; the finished run comes from the JSON, the stopped one trains
    import shutil

    for run in study["runs"]:
        shutil.rmtree(run["dir"])
    trained.clear()
    stop.clear()
    ablation_routes.main(args + ["--reuse"])
    assert trained == ["all three routes"]
    again = json.loads((out / "t.json").read_text())
    assert [r["complete"] for r in again["runs"]] == [True, True]
    assert again["runs"][0] == runs["primary only"]
    with pytest.raises(SystemExit) as check:
        ablation_routes.main(args + ["--check-complete"])
    assert check.value.code == 0


def test_a_stopped_run_keeps_the_diagnostics_of_the_evaluations_it_reached(tmp_path, monkeypatch):
    """With ``--diagnose``, a run stopped by a signal is diagnosed at the evaluation checkpoints it
    reached, not at its stop checkpoint between evaluations; the JSON keeps them. The trainer is
    replaced by a writer of its files, the route report by its cached result."""
    import pytest

    def fake_train(cmd, **kwargs):
        out = _output_dir(cmd)
        # evaluation after 2 steps (logged at 0-based iteration 1), stopped after 3
        (out / "model_0000001.pth").write_bytes(b"")
        (out / "model_0000002.pth").write_bytes(b"")
        (out / "route_report_0000002.json").write_text(json.dumps({"routes": {"primary": {}}}))
        line = {"iteration": 1, "bbox/AP": 10.0, "bbox/AP50": 20.0}
        (out / "metrics.json").write_text(json.dumps(line) + "\n")
        return subprocess.CompletedProcess(cmd, 143)

    monkeypatch.setattr(ablation_routes.subprocess, "run", fake_train)
    out = tmp_path / "study"
    args = ["--iters", "6", "--eval-every", "2", "--output", str(out), "--tag", "t",
            "--settings", "primary only", "--diagnose"]  # fmt: skip
    with pytest.raises(SystemExit, match="stopped part-way"):
        ablation_routes.main(args)
    (run,) = json.loads((out / "t.json").read_text())["runs"]
    assert not run["complete"] and run["curve"] == [[1, 10.0, 20.0]]
    assert run["diagnostics"] == {"2": {"routes": {"primary": {}}}}


def test_report_combines_several_study_files_into_one_table_and_plot(tmp_path):
    """``--report A.json B.json --combined STEM``: all runs in one table and plot; a setting found in
    both files is told apart by its file's tag, and each file's overrides are listed."""

    def study(tag, setting, ap, opts):
        run = {"setting": setting, "seed": 1, "curve": [[349, ap - 10, 50.0], [699, ap, 60.0]],
               "sec_per_iter": 1.0, "complete": True}  # fmt: skip
        return {"tag": tag, "iters": 700, "seeds": [1], "opts": opts, "runs": [run]}

    files = []
    for tag, setting, ap, opts in (
        ("p", "primary only", 40.0, []),
        ("t6", "all three routes", 30.0, []),
        ("t2", "all three routes", 35.0, ["model.criterion.one_to_many_matcher.max_k=2"]),
    ):
        files.append(tmp_path / f"{tag}.json")
        files[-1].write_text(json.dumps(study(tag, setting, ap, opts)))
    ablation_routes.main(["--report", *map(str, files), "--combined", str(tmp_path / "both")])
    table = (tmp_path / "both.md").read_text()
    assert "| primary only | 1 |" in table
    assert "| all three routes (t6) | 1 |" in table and "| all three routes (t2) | 1 |" in table
    assert "`t2` (700 iterations): `model.criterion.one_to_many_matcher.max_k=2`" in table
    assert "35.00 [35.0]" in table and "40.00 [40.0]" in table
    assert (tmp_path / "both.png").read_bytes()[:8] == PNG
    import pytest

    with pytest.raises(SystemExit):  # several files and nowhere to write them
        ablation_routes.main(["--report", *map(str, files)])
