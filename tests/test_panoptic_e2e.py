"""Panoptic end to end: synthetic panoptic data -> model -> PQ.

A perfect prediction, pushed through the model's own post-processing (resize, overlap resolution, stuff
merging) and the COCO panoptic evaluator, scores PQ 100; the ++ panoptic quick-start config trains a few
iterations through ``projects/train_net.py`` and reports PQ / SQ / RQ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from test_panoptic_model import TINY_QUERY_HEAD
from tiny_model import REPO, TINY_OVERRIDES

from mrdetr.config import LazyConfig, instantiate
from mrdetr.data import DatasetCatalog, MetadataCatalog
from mrdetr.data.panoptic import read_panoptic_ids
from mrdetr.data.synthetic_panoptic import generate_synthetic_panoptic_dataset
from mrdetr.evaluation import COCOPanopticEvaluator
from mrdetr.modeling.meta_arch.mr_detr_insseg import SegRawOutput

QUICKSTART = REPO / "projects/mr_detr_pp_align/configs/quickstart_synthetic_panoptic.py"
MODEL_CONFIG = REPO / "configs/common/models/mr_detr_panoptic_r50.py"
BIG = 20.0


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    generate_synthetic_panoptic_dataset(
        root / "synthetic_panoptic", num_train=6, num_val=3, seed=3, image_size=96, progress=False
    )
    return root


def test_a_perfect_prediction_scores_pq_100(datasets_root, monkeypatch):
    monkeypatch.setenv("MRDETR_DATASETS", str(datasets_root))
    dicts = DatasetCatalog.get("synthetic_panoptic_val")
    metadata = MetadataCatalog.get("synthetic_panoptic_val")
    num_classes = len(metadata.stuff_classes)
    things = sorted(metadata.thing_dataset_id_to_contiguous_id.values())
    cfg = LazyConfig.apply_overrides(
        LazyConfig.load(str(MODEL_CONFIG)),
        TINY_OVERRIDES + TINY_QUERY_HEAD + [f"model.num_classes={num_classes}"],
    )
    cfg.model.thing_class_ids = things
    model = instantiate(cfg.model).eval()
    evaluator = COCOPanopticEvaluator("synthetic_panoptic_val", distributed=False)
    evaluator.reset()
    for d in dicts:
        ids = torch.from_numpy(read_panoptic_ids(d["pan_seg_file_name"]))
        segments = d["segments_info"]
        masks = torch.stack([ids == s["id"] for s in segments]).float() * 2 * BIG - BIG
        logits = torch.full((len(segments), num_classes), -BIG)
        logits[torch.arange(len(segments)), [s["category_id"] for s in segments]] = BIG
        # the model's raw output for the image in a batch padded by 8 pixels
        h, w = ids.shape
        padded = torch.full((len(segments), h + 8, w + 8), -BIG)
        padded[:, :h, :w] = masks
        raw = SegRawOutput(
            logits[None],
            torch.zeros(1, len(segments), 4),
            [(h, w)],
            pred_masks=padded[None],
            padded_size=(h + 8, w + 8),
        )
        inputs = [{"image_id": d["image_id"], "height": h, "width": w}]
        outputs = model.postprocess(raw, inputs)
        pred_ids, info = outputs[0]["panoptic_seg"]
        assert len(info) == len(segments)  # stuff regions stay one segment each
        evaluator.process(inputs, outputs)
    results = evaluator.evaluate()["panoptic_seg"]
    for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
        assert results[key] == pytest.approx(100.0), key


def test_panoptic_quickstart_trains_and_reports_pq(datasets_root, tmp_path):
    env = dict(os.environ, MRDETR_DATASETS=str(datasets_root), PYTHONUNBUFFERED="1")
    overrides = [
        "train.max_iter=3",
        "train.eval_period=3",
        "train.checkpointer.period=3",
        "train.eval_at_start=False",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.train.mapper.augmentation.min_sizes=[96]",
        "dataloader.train.mapper.augmentation.max_size=128",
        "dataloader.test.mapper.augmentation.min_size=96",
        "dataloader.test.mapper.augmentation.max_size=128",
        f"train.output_dir={tmp_path}",
    ]
    cmd = [sys.executable, str(REPO / "projects/train_net.py"), "--config-file", str(QUICKSTART)]
    proc = subprocess.run(
        cmd + overrides, env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "copypaste: Task: panoptic_seg" in (tmp_path / "log.txt").read_text()
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert any("loss_dice_sep" in m and "loss_moe_aux" in m for m in metrics)
    pq = [m["panoptic_seg/PQ"] for m in metrics if "panoptic_seg/PQ" in m]
    assert pq and 0.0 <= pq[-1] <= 100.0
    predictions = json.loads((tmp_path / "inference" / "predictions.json").read_text())
    assert len(predictions["annotations"]) == 3
