"""Config-driven runner and CLI: train, resume, eval-only (with EMA), outputs, 2-process CLI."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_engine_common import ToyDetector, ToyEvaluator, toy_subprocess_env, toy_test_set

from mrdetr.config import LazyConfig
from mrdetr.engine import default_argument_parser
from mrdetr.engine.runner import build_model, build_optimizer, do_train, main, prepare_config

REPO = Path(__file__).resolve().parents[1]

CONFIG_TEXT = f"""
from mrdetr.config import LazyCall as L, LazyConfig
from test_engine_common import ToyDetector, ToyEvaluator, ToyLoader, toy_test_set

_common = {str(REPO / "configs" / "common")!r}
train = LazyConfig.load(_common + "/train.py", "train")
optimizer = LazyConfig.load(_common + "/optim.py", "optimizer")
lr_multiplier = LazyConfig.load(_common + "/coco_schedule.py", "lr_multiplier_12ep")
model = L(ToyDetector)(dropout=0.1)
dataloader = dict(
    train=L(ToyLoader)(batch_size=4, seed=0),
    test=L(toy_test_set)(num_batches=2),
    evaluator=L(ToyEvaluator)(),
)
train.device = "cpu"
train.max_iter = 4
train.eval_period = 2
train.log_period = 1
train.checkpointer.period = 2
"""


@pytest.fixture
def config_file(tmp_path) -> str:
    path = tmp_path / "toy_config.py"
    path.write_text(CONFIG_TEXT)
    return str(path)


def _args(config_file: str, *extra: str):
    return default_argument_parser().parse_args(["--config-file", config_file, *extra])


def _evaluate(model: torch.nn.Module) -> float:
    evaluator = ToyEvaluator()
    model.eval()
    with torch.no_grad():
        for batch in toy_test_set(num_batches=2):
            evaluator.process(batch, model(batch))
    return evaluator.evaluate()["toy"]["mse"]


def test_prepare_config_fast_dev_run_and_evaluator_dir(config_file) -> None:
    cfg = LazyConfig.load(config_file)
    cfg.train.output_dir = "/tmp/run_x"
    cfg.train.fast_dev_run.enabled = True
    before = OmegaConf.to_container(cfg, resolve=False)
    prepared = prepare_config(cfg)
    assert OmegaConf.to_container(cfg, resolve=False) == before  # the input is not edited
    train = prepared.train
    assert (train.max_iter, train.eval_period, train.log_period) == (20, 10, 1)
    assert prepared.dataloader.evaluator.output_dir == os.path.join("/tmp/run_x", "inference")
    cfg.dataloader.evaluator.output_dir = "/explicit"
    assert prepare_config(cfg).dataloader.evaluator.output_dir == "/explicit"


def test_building_and_training_leave_the_config_unchanged(config_file, tmp_path) -> None:
    cfg = LazyConfig.load(config_file)
    cfg.train.output_dir = str(tmp_path / "run")
    cfg.train.max_iter = 2
    cfg.train.eval_period = 0
    before = copy.deepcopy(OmegaConf.to_container(cfg, resolve=False))
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    assert len(optimizer.param_groups) >= 1 and optimizer.defaults["lr"] == cfg.optimizer.lr
    do_train(cfg, _args(config_file))
    cfg.train.max_iter = 3  # resume: the loader is built with start_iter > 0
    before["train"]["max_iter"] = 3
    trainer = do_train(cfg, _args(config_file, "--resume"))
    assert trainer.iter == 3 and trainer.start_iter == 2
    assert OmegaConf.to_container(cfg, resolve=False) == before
    assert "model" not in cfg.optimizer.params and "start_iter" not in cfg.dataloader.train


def test_train_resume_and_eval_only(config_file, tmp_path) -> None:
    out = str(tmp_path / "run")
    common = [f"train.output_dir={out}", "train.model_ema.enabled=True", "train.seed=3"]
    assert main(_args(config_file, *common)) is None
    files = set(os.listdir(out))
    assert {
        "config.yaml",
        "log.txt",
        "metrics.json",
        "last_checkpoint",
        "model_0000001.pth",
        "model_0000003.pth",
        "model_final.pth",
    } <= files
    assert any(name.startswith("events.out.tfevents") for name in files)
    records = [json.loads(line) for line in Path(out, "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in records if "total_loss" in r] == [0, 1, 2, 3]
    evals = [r for r in records if "toy/mse" in r]
    # periodic eval after iteration 1; the final one is recorded at max_iter (detectron2 convention)
    assert [r["iteration"] for r in evals] == [1, 4] and all("toy_ema/mse" in r for r in evals)
    assert "Using seed 3" in Path(out, "log.txt").read_text()
    saved = LazyConfig.load(os.path.join(out, "config.yaml"))
    assert saved.train.output_dir == out and saved.train.model_ema.enabled is True

    # resume continues after model_final (iteration 3) up to the new max_iter
    assert main(_args(config_file, "--resume", *common, "train.max_iter=6")) is None
    records = [json.loads(line) for line in Path(out, "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in records if "total_loss" in r] == [0, 1, 2, 3, 4, 5]
    assert os.path.exists(os.path.join(out, "model_0000005.pth"))

    final = os.path.join(out, "model_final.pth")
    checkpoint = torch.load(final, weights_only=True)
    assert checkpoint["iteration"] == 5
    results = main(_args(config_file, "--eval-only", *common, f"train.init_checkpoint={final}"))
    model = ToyDetector(dropout=0.1)
    model.load_state_dict(checkpoint["model"])
    assert results["toy"]["mse"] == pytest.approx(_evaluate(model))

    ema_results = main(
        _args(
            config_file,
            "--eval-only",
            *common,
            f"train.init_checkpoint={final}",
            "train.model_ema.use_ema_weights_for_eval_only=True",
        )
    )
    model.load_state_dict(checkpoint["ema"]["state"])
    assert ema_results["toy"]["mse"] == pytest.approx(_evaluate(model))
    assert ema_results["toy"]["mse"] != pytest.approx(results["toy"]["mse"])


def _train_net_two_cpu_processes(
    config_file: str, out: Path, *overrides: str
) -> subprocess.CompletedProcess:
    """``projects/train_net.py --num-gpus 2`` on the toy config, 2 iterations, output in ``out``."""
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "projects" / "train_net.py"),
            "--config-file",
            config_file,
            "--num-gpus",
            "2",
            f"train.output_dir={out}",
            "train.max_iter=2",
            *overrides,
        ],
        env=toy_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.slow  # ~20 s: three Python processes start
def test_cli_two_cpu_processes_report_a_workers_config_error_in_one_line(
    config_file, tmp_path
) -> None:
    """An error a worker process meets (here a bad value, checked when DDP wraps the model) ends
    the run with status 2 and the error: / hint: lines, not the workers' tracebacks."""
    proc = _train_net_two_cpu_processes(
        config_file, tmp_path / "ddp_run", "train.ddp.find_unused_parameters=maybe"
    )
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors, proc.stderr[-3000:]
    for line in errors:  # each worker that met it prints it
        assert line == (
            "error: train.ddp.find_unused_parameters='maybe': "
            "expected true, false or \"auto\", got 'maybe'"
        )
    assert "Traceback" not in proc.stderr
    assert "hint: check the config file and the key=value overrides" in proc.stderr


@pytest.mark.slow  # ~20 s: three Python processes start
def test_cli_two_cpu_processes(config_file, tmp_path) -> None:
    out = tmp_path / "ddp_run"
    proc = _train_net_two_cpu_processes(config_file, out, "train.eval_period=0")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checkpoint = torch.load(out / "model_final.pth", weights_only=True)
    assert checkpoint["iteration"] == 1 and len(checkpoint["rng_per_rank"]) == 2
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    log = (out / "log.txt").read_text()
    assert "World size: 2" in log
