"""Route diagnostics on hand-built predictions, and ``tools/route_report.py`` as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from tiny_model import REPO

from mrdetr.data import register_coco_instances
from mrdetr.evaluation.route_diagnostics import (
    RouteDiagnostics,
    checkpoint_iteration,
    classwise_nms,
    duplicate_counts,
    one_to_many_positives,
)
from mrdetr.modeling.matcher.one_to_many import OneToManyAssigner
from mrdetr.modeling.outputs import RawOutput
from mrdetr.modeling.routes import Route
from mrdetr.structures import Boxes, Instances, box_xyxy_to_cxcywh

QUICKSTART = REPO / "projects/mr_detr_deformable/configs/quickstart_synthetic.py"


def _instances(boxes, scores, classes, size=(100, 100)) -> Instances:
    return Instances(size, pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                     scores=torch.tensor(scores), pred_classes=torch.tensor(classes))  # fmt: skip


def test_duplicate_counts_count_same_class_confident_overlapping_detections():
    gt = torch.tensor([[10.0, 10, 50, 50], [60, 60, 90, 90]])
    gt_cls = torch.tensor([0, 1])
    pred = torch.tensor([
        [10.0, 10, 50, 50],  # gt 0, class 0, 0.9: counts
        [11.0, 11, 51, 51],  # gt 0 again (IoU 0.90): counts
        [12.0, 10, 50, 52],  # gt 0 again: counts
        [10.0, 10, 50, 50],  # gt 0's box but class 1: does not count
        [60.0, 60, 90, 90],  # gt 1 but score 0.1: does not count
        [61.0, 60, 90, 90],  # gt 1, 0.8: counts
        [10.0, 10, 30, 30],  # class 0 but IoU 0.25 with gt 0: does not count
    ])  # fmt: skip
    scores = torch.tensor([0.9, 0.8, 0.7, 0.9, 0.1, 0.8, 0.9])
    classes = torch.tensor([0, 0, 0, 1, 1, 1, 0])
    hits = duplicate_counts(pred, scores, classes, gt, gt_cls, score_threshold=0.3, match_iou=0.5)
    assert hits.tolist() == [3, 1]
    # stricter thresholds drop detections, never add them
    strict = duplicate_counts(
        pred, scores, classes, gt, gt_cls, score_threshold=0.75, match_iou=0.5
    )
    assert strict.tolist() == [2, 1]
    assert duplicate_counts(pred[:0], scores[:0], classes[:0], gt, gt_cls,
                            score_threshold=0.3, match_iou=0.5).tolist() == [0, 0]  # fmt: skip


def test_classwise_nms_keeps_other_classes_and_the_best_duplicate():
    inst = _instances(
        [[10, 10, 50, 50], [11, 11, 51, 51], [10, 10, 50, 50], [60, 60, 90, 90]],
        [0.8, 0.9, 0.7, 0.6],
        [0, 0, 1, 0],
    )
    kept = classwise_nms(inst, iou_threshold=0.7)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert kept.pred_classes.tolist() == [0, 1, 0]


@pytest.fixture()
def gt_dataset(tmp_path):
    """Three 100x100 images with two or three boxes of two classes (category ids 7 and 9)."""
    images, anns = [], []
    boxes = {1: [(10, 10, 40, 40, 7), (55, 50, 40, 30, 9)], 2: [(5, 5, 60, 60, 9)],
             3: [(20, 30, 30, 30, 7), (60, 10, 30, 30, 7), (10, 70, 20, 20, 9)]}  # fmt: skip
    for image_id, items in boxes.items():
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": 100, "width": 100})
        for x, y, w, h, c in items:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "bbox": [x, y, w, h],
                         "area": w * h, "category_id": c, "iscrowd": 0})  # fmt: skip
    path = tmp_path / "gt.json"
    cats = [{"id": 7, "name": "seven"}, {"id": 9, "name": "nine"}]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    name = f"route_diag_{tmp_path.name}"
    register_coco_instances(name, {}, str(path), str(tmp_path))
    contiguous = {7: 0, 9: 1}
    return name, {i: [((x, y, x + w, y + h), contiguous[c]) for x, y, w, h, c in v]
                  for i, v in boxes.items()}  # fmt: skip


def test_nms_never_lowers_ap_on_duplicates_and_counts_them(gt_dataset):
    name, boxes = gt_dataset
    diag = RouteDiagnostics(name, [Route.PRIMARY], nms_iou=0.7)
    inputs, dets, n = [], [], 0
    for image_id, items in boxes.items():
        b, s, c = [], [], []
        for (x0, y0, x1, y1), cls in items:
            # every object found three times: duplicates, no misses; each object's duplicates
            # outscore the next object's true detection, so they cost the raw output precision
            top = 0.95 - 0.05 * n
            n += 1
            b += [[x0, y0, x1, y1], [x0 + 1, y0, x1 + 1, y1], [x0, y0 + 1, x1, y1 + 1]]
            s += [top, top - 0.01, top - 0.02]
            c += [cls] * 3
        inputs.append({"image_id": image_id, "height": 100, "width": 100})
        dets.append(_instances(b, s, c))
    diag.process(inputs, {Route.PRIMARY: dets})
    m = diag.evaluate()["routes"]["primary"]
    assert m["AP_nms"] == pytest.approx(100.0)
    assert m["AP_nms"] >= m["AP"]
    assert m["AP"] < 100.0  # the duplicates are false positives of the raw output
    assert m["dups_per_object"] == pytest.approx(3.0)
    assert m["dups_per_object_nms"] == pytest.approx(1.0)
    assert m["found_fraction"] == pytest.approx(1.0)


def test_one_to_many_positives_on_a_known_assignment():
    assigner = OneToManyAssigner(num_queries=40, positive_fraction=0.25, max_k=6, threshold=0.4)
    gt_xyxy = torch.tensor([[0.1, 0.1, 0.4, 0.4], [0.6, 0.6, 0.9, 0.9]])
    gt = box_xyxy_to_cxcywh(gt_xyxy)
    boxes = torch.tensor([[0.5, 0.5, 0.05, 0.05]]).repeat(10, 1)  # far from both: not positive
    boxes[0:3] = gt[0]  # three exact copies of box 0
    boxes[3] = gt[1]  # one exact copy of box 1
    logits = torch.full((10, 2), -10.0)
    logits[0:3, 0] = 10.0
    logits[3, 1] = 10.0
    positive, matches = one_to_many_positives(
        assigner, logits, boxes, torch.tensor([0, 1]), gt, torch.Generator().manual_seed(0)
    )
    # quality 1.0 for queries 0-2 (box 0) and 3 (box 1); nothing else reaches 0.4 except each
    # box's best query, already among them: 4 positives, 3 + 1 matches
    assert (positive, matches) == (4, 4)


def test_process_counts_assigner_positives_per_query(gt_dataset):
    name, boxes = gt_dataset
    assigner = OneToManyAssigner(num_queries=40, max_k=6, threshold=0.4)
    diag = RouteDiagnostics(name, [Route.INSTRUCT], assigner=assigner)
    q = 8
    inputs, dets, logits, pred = [], [], torch.full((len(boxes), q, 2), -10.0), []
    for i, (image_id, items) in enumerate(boxes.items()):
        b = torch.tensor([[0.95, 0.95, 0.02, 0.02]]).repeat(q, 1)
        for j, (xyxy, cls) in enumerate(items):  # query j sits exactly on object j
            b[j] = box_xyxy_to_cxcywh(torch.tensor(xyxy, dtype=torch.float32) / 100)
            logits[i, j, cls] = 10.0
        pred.append(b)
        inputs.append({"image_id": image_id, "height": 100, "width": 100})
        dets.append(_instances([[0, 0, 1, 1]], [0.01], [0]))
    raw = RawOutput(logits, torch.stack(pred), [(100, 100)] * len(boxes))
    diag.process(inputs, {Route.INSTRUCT: dets}, {Route.INSTRUCT: raw})
    m = diag.evaluate()["routes"]["instruct"]
    objects = sum(len(v) for v in boxes.values())
    assert m["o2m_positive_fraction"] == pytest.approx(objects / (q * len(boxes)))
    assert m["o2m_matches_per_object"] == pytest.approx(1.0)


def test_checkpoint_iteration_reads_the_file_name(tmp_path):
    assert checkpoint_iteration(tmp_path / "model_0000174.pth") == 175
    with pytest.raises(ValueError, match="model_final.pth"):
        checkpoint_iteration(tmp_path / "model_final.pth")


def test_route_report_cli_on_a_tiny_checkpoint(tmp_path):
    from mrdetr.config import LazyConfig, instantiate
    from mrdetr.data.synthetic import generate_synthetic_dataset

    generate_synthetic_dataset(tmp_path / "datasets" / "synthetic", num_train=0, num_val=2,
                               image_size=64, progress=False)  # fmt: skip
    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(str(QUICKSTART)).model)
    ckpt = tmp_path / "model_0000009.pth"
    torch.save({"model": model.state_dict(), "iteration": 9}, ckpt)
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools/route_report.py"), "--config-file", str(QUICKSTART),
         "--json", str(out), "--nms", "0.6", "--opts", f"train.init_checkpoint={ckpt}",
         'model.train_routes=["primary"]', "dataloader.test.mapper.augmentation.min_size=64"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "MRDETR_DATASETS": str(tmp_path / "datasets")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| primary |" in proc.stdout and "| sep_ffn |" in proc.stdout
    report = json.loads(out.read_text())
    assert report["iteration"] == 10 and report["settings"]["nms_iou"] == 0.6
    assert set(report["routes"]) == {"primary", "instruct", "sep_ffn"}
    for metrics in report["routes"].values():
        assert 0.0 <= metrics["AP"] <= 100.0 and metrics["dups_per_object"] >= 0.0
        assert 0.0 <= metrics["o2m_positive_fraction"] <= 1.0
    # a primary-only model trains no one-to-many route: the assigner runs on the primary route
    assert report["one_to_many"]["routes"] == ["primary"]

    missing = subprocess.run(
        [sys.executable, str(REPO / "tools/route_report.py"), "--config-file", str(QUICKSTART)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert missing.returncode != 0
    assert "train.init_checkpoint" in missing.stderr.strip().splitlines()[-1]


def test_route_report_at_every_evaluation_lands_in_the_eval_results(tmp_path, monkeypatch):
    from mrdetr.config import LazyConfig, instantiate
    from mrdetr.data.synthetic import generate_synthetic_dataset
    from mrdetr.engine.hooks import EvalHook
    from mrdetr.engine.runner import do_test

    generate_synthetic_dataset(tmp_path / "datasets" / "synthetic", num_train=0, num_val=2,
                               image_size=64, progress=False)  # fmt: skip
    monkeypatch.setenv("MRDETR_DATASETS", str(tmp_path / "datasets"))
    cfg = LazyConfig.apply_overrides(
        LazyConfig.load(str(QUICKSTART)),
        ["train.route_report.enabled=True", "train.route_report.nms_iou=0.5",
         "dataloader.test.mapper.augmentation.min_size=64",
         f"dataloader.evaluator.output_dir={tmp_path / 'inference'}"],
    )  # fmt: skip
    torch.manual_seed(0)
    results = do_test(cfg, instantiate(cfg.model))
    assert set(results["routes"]) == {"primary", "instruct", "sep_ffn"}
    # the primary route's raw AP is the evaluator's AP: the same detections, the same COCOeval
    assert results["routes"]["primary"]["AP"] == pytest.approx(results["bbox"]["AP"], abs=1e-6)
    flat = EvalHook._flatten(results)
    assert {"routes/primary/AP_nms", "routes/sep_ffn/dups_per_object", "bbox/AP"} <= set(flat)


def test_criterion_logs_one_to_many_positives_as_training_scalars():
    from tiny_model import tiny_batch, tiny_model

    from mrdetr.utils.events import EventStorage

    model = tiny_model(["model.criterion.log_route_stats=True"])
    model.train()
    batch = tiny_batch(num_boxes=(3, 2))
    model(batch)  # outside a trainer: nothing to log into, no error
    with EventStorage(0) as storage:
        model(batch)
    latest = storage.latest()
    for route in ("instruct", "sep_ffn"):
        fraction, _ = latest[f"o2m/{route}/positive_fraction"]
        per_object, _ = latest[f"o2m/{route}/matches_per_object"]
        # at most max_k (6) queries per object, at least one query per image with objects
        assert 1 / 30 <= fraction <= 6 * 3 / 30 and 0 < per_object <= 6
    assert "o2m/primary/positive_fraction" not in latest
