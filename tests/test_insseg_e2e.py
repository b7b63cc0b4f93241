"""Instance segmentation end to end: the InsSeg project config (tiny sizes) trains on synthetic data
with polygon masks and is evaluated with COCO bbox and segm AP through ``projects/train_net.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_insseg import TINY_SEG
from tiny_model import REPO, TINY_OVERRIDES

from mrdetr.data.synthetic import generate_synthetic_dataset

CONFIG = (
    REPO
    / "projects/mr_detr_deformable_ins_seg/configs/deformable_detr_r50_two_stage_12ep_plusplus.py"
)
DATA = [
    "dataloader.train.dataset=synthetic_train",
    "dataloader.test.dataset=synthetic_val",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "dataloader.train.mapper.augmentation.min_sizes=[96]",
    "dataloader.train.mapper.augmentation.max_size=128",
    "dataloader.train.mapper.augmentation.crop_prob=0.0",
    "dataloader.test.mapper.augmentation.min_size=96",
    "dataloader.test.mapper.augmentation.max_size=128",
    "model.num_classes=6",
    "train.max_iter=3",
    "train.eval_period=3",
    "train.checkpointer.period=3",
    "train.device=cpu",
    "train.seed=0",
]


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    generate_synthetic_dataset(
        root / "synthetic", num_train=6, num_val=3, seed=2, image_size=96, progress=False
    )
    return root


def test_insseg_trains_and_reports_bbox_and_segm_ap(datasets_root, tmp_path):
    env = dict(os.environ, MRDETR_DATASETS=str(datasets_root), PYTHONUNBUFFERED="1")
    overrides = TINY_OVERRIDES + TINY_SEG + DATA + [f"train.output_dir={tmp_path}"]
    cmd = [sys.executable, str(REPO / "projects/train_net.py"), "--config-file", str(CONFIG)]
    proc = subprocess.run(
        cmd + overrides, env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (tmp_path / "log.txt").read_text()
    assert "copypaste: Task: bbox" in log and "copypaste: Task: segm" in log
    results = json.loads((tmp_path / "inference" / "coco_instances_results.json").read_text())
    assert results and "segmentation" in results[0] and "counts" in results[0]["segmentation"]
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert any("loss_dice_o2m" in m and "loss_mask_sep" in m for m in metrics)
    assert any("segm/AP" in m for m in metrics)
