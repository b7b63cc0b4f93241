"""The README's main job, bounded: the quick-start config trains on a generated synthetic dataset,
evaluates before and after training, checkpoints, and resumes exactly (real model, real data path)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mrdetr.data.synthetic import generate_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "projects/mr_detr_deformable/configs/quickstart_synthetic.py"
BOUNDED = [
    # the full method (the shipped quick start trains PRIMARY only, see test_quickstart_routes)
    'model.train_routes=["primary","instruct","sep_ffn"]',
    "train.max_iter=4",
    "train.eval_period=4",
    "train.checkpointer.period=2",
    "train.log_period=1",
    "train.deterministic=True",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
]


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    generate_synthetic_dataset(
        root / "synthetic", num_train=8, num_val=3, seed=1, image_size=96, progress=False
    )
    return root


def _train_net(datasets_root: Path, output: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MRDETR_DATASETS=str(datasets_root), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(REPO / "projects/train_net.py"), "--config-file", str(CONFIG)]
    cmd += [*extra, *BOUNDED, f"train.output_dir={output}"]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_quickstart_trains_evaluates_and_resumes_exactly(datasets_root, tmp_path):
    run = tmp_path / "run"
    proc = _train_net(datasets_root, run)
    log = (run / "log.txt").read_text()
    # AP is printed before training (eval_at_start) and at the end
    assert log.count("copypaste: AP,AP50,AP75,APs,APm,APl") == 2, proc.stdout[-2000:]
    for name in ("config.yaml", "metrics.json", "model_final.pth", "last_checkpoint"):
        assert (run / name).is_file(), name
    results = json.loads((run / "inference" / "coco_instances_results.json").read_text())
    assert results and {"image_id", "bbox", "score", "category_id"} <= set(results[0])
    assert {r["category_id"] for r in results} <= {1, 3, 5, 7, 9, 11}  # dataset ids, not contiguous
    metrics = [json.loads(line) for line in (run / "metrics.json").read_text().splitlines()]
    assert any("loss_giou_group_0" in m for m in metrics)
    assert any("bbox/AP50" in m for m in metrics)

    # "kill" after iteration 2: keep only the iteration-2 checkpoint and resume from it
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    for f in ("model_0000003.pth", "model_final.pth"):
        (resumed / f).unlink()
    (resumed / "last_checkpoint").write_text("model_0000001.pth")
    _train_net(datasets_root, resumed, "--resume")
    final, again = _weights(run / "model_final.pth"), _weights(resumed / "model_final.pth")
    assert final.keys() == again.keys()
    for key in final:
        assert torch.equal(final[key], again[key]), key

    # --eval-only with the trained weights
    proc = _train_net(
        datasets_root,
        tmp_path / "eval",
        "--eval-only",
        f"train.init_checkpoint={run / 'model_final.pth'}",
    )
    assert "copypaste: AP,AP50" in proc.stdout + proc.stderr


def test_quickstart_routes_follow_the_route_study():
    """The detection quick start ships the setting the route study measured best at its budget
    (docs/route_study.md); the Mr. DETR++ quick starts keep the routes their MoE is built for."""
    from mrdetr.config import LazyConfig

    assert list(LazyConfig.load(str(CONFIG)).model.train_routes) == ["primary"]
    for name in ("quickstart_synthetic_pp.py", "quickstart_synthetic_panoptic.py"):
        cfg = LazyConfig.load(str(REPO / "projects/mr_detr_pp_align/configs" / name))
        assert list(cfg.model.train_routes) == ["primary", "instruct", "sep_ffn"], name
