"""Panoptic quality: per-image statistics, COCOPanopticEvaluator on a tiny on-disk dataset, and a
cross-check against torchmetrics."""

from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from mrdetr.data.catalog import MetadataCatalog
from mrdetr.evaluation import (
    COCOPanopticEvaluator,
    PQStat,
    pq_compute_from_files,
    pq_compute_single_image,
)
from mrdetr.evaluation.panoptic_quality import id_to_rgb, read_panoptic_png

THING, STUFF = 1, 0
CATS = {1: {"isthing": THING}, 2: {"isthing": STUFF}}


def seg(sid: int, cat: int, crowd: int = 0) -> dict:
    return {"id": sid, "category_id": cat, "iscrowd": crowd}


def test_hand_computed_tp_fp_fn():
    # 10x10. GT: A (id 1, cat 1) = rows 0-3 (40 px), row 4 void, B (id 2, cat 1) = rows 5-9 (50 px).
    # Pred: P (id 5, cat 1) = rows 0-2 (30 px, inside A): IoU = 30 / (30 + 40 - 30) = 0.75 -> TP.
    #       Q (id 7, cat 1) = rows 5-6 (20 px, inside B): IoU = 20 / 50 = 0.4 -> Q is FP, B is FN.
    # cat 1: tp=1, fp=1, fn=1, iou_sum=0.75 -> SQ = 0.75, RQ = 1 / (1 + 0.5 + 0.5) = 0.5,
    # PQ = 0.375.
    gt = np.zeros((10, 10), dtype=np.int64)
    gt[0:4], gt[5:10] = 1, 2
    pred = np.zeros_like(gt)
    pred[0:3], pred[5:7] = 5, 7
    stat = pq_compute_single_image(gt, [seg(1, 1), seg(2, 1)], pred, [seg(5, 1), seg(7, 1)])
    s = stat.per_category[1]
    assert (s.tp, s.fp, s.fn) == (1, 1, 1)
    assert s.iou_sum == pytest.approx(0.75)
    avg, per_class = stat.pq_average(CATS)
    assert avg["n"] == 1
    assert avg["pq"] == pytest.approx(0.375)
    assert avg["sq"] == pytest.approx(0.75)
    assert avg["rq"] == pytest.approx(0.5)
    assert per_class[1]["pq"] == pytest.approx(0.375)


def test_perfect_with_permuted_ids_and_things_stuff_split():
    gt = np.zeros((8, 8), dtype=np.int64)
    gt[:, :4], gt[:, 4:], gt[2:4, 1:3] = 1, 2, 3  # stuff 2 (id 1), thing 1 (ids 2, 3)
    gt_segs = [seg(1, 2), seg(2, 1), seg(3, 1)]
    permutation = {0: 0, 1: 40, 2: 7, 3: 11}
    pred = np.vectorize(permutation.get)(gt)
    pred_segs = [seg(40, 2), seg(7, 1), seg(11, 1)]
    avg, _ = pq_compute_single_image(gt, gt_segs, pred, pred_segs).pq_average(CATS)
    assert avg["pq"] == avg["sq"] == avg["rq"] == pytest.approx(1.0)
    # Things perfect, stuff missed entirely: the stuff segment is predicted as thing 1 -> stuff FN,
    # extra thing FP. PQ_th = 1 / (2 + 0.5) * 1 = 0.8, PQ_st = 0, All = (0.8 + 0) / 2.
    pred_segs = [seg(40, 1), seg(7, 1), seg(11, 1)]
    stat = pq_compute_single_image(gt, gt_segs, pred, pred_segs)
    assert stat.pq_average(CATS, isthing=True)[0]["pq"] == pytest.approx(0.8)
    assert stat.pq_average(CATS, isthing=False)[0]["pq"] == 0.0
    assert stat.pq_average(CATS)[0]["pq"] == pytest.approx(0.4)


def test_void_rules():
    gt = np.zeros((10, 10), dtype=np.int64)
    gt[0:2] = 1  # A: 20 px, rows 2-9 void
    pred = np.zeros_like(gt)
    pred[0:3] = (
        5  # A + 10 void px: void pixels leave the union -> IoU = 20 / (30 + 20 - 20 - 10) = 1
    )
    stat = pq_compute_single_image(gt, [seg(1, 1)], pred, [seg(5, 1)])
    assert stat.per_category[1].iou_sum == pytest.approx(1.0)
    # Unmatched predictions (category 2, so they cannot match A): 60 % on void -> ignored.
    pred = np.zeros_like(gt)
    pred[1, 0:4], pred[5, 0:6] = 6, 6  # 4 px on A + 6 px on void
    stat = pq_compute_single_image(gt, [seg(1, 1)], pred, [seg(6, 2)])
    assert (stat[2].fp, stat[1].fn) == (0, 1)
    # 40 % on void -> FP.
    pred = np.zeros_like(gt)
    pred[1, 0:6], pred[5, 0:4] = 6, 6  # 6 px on A + 4 px on void
    stat = pq_compute_single_image(gt, [seg(1, 1)], pred, [seg(6, 2)])
    assert (stat[2].fp, stat[1].fn) == (1, 1)


def test_crowd_rules():
    gt = np.zeros((10, 10), dtype=np.int64)
    gt[0:5], gt[5:10] = 1, 2  # id 1: crowd of cat 1, id 2: regular cat 2
    gt_segs = [seg(1, 1, crowd=1), seg(2, 2)]
    pred = np.zeros_like(gt)
    pred[0:5] = 3  # exactly the crowd region, same category: neither TP nor FP
    stat = pq_compute_single_image(gt, gt_segs, pred, [seg(3, 1)])
    assert (stat[1].tp, stat[1].fp, stat[1].fn) == (0, 0, 0)
    assert stat[2].fn == 1  # the regular segment is missed
    # Same pixels predicted as category 2: the crowd is not of its category -> FP.
    stat = pq_compute_single_image(gt, gt_segs, pred, [seg(3, 2)])
    assert (stat[1].fn, stat[2].fp, stat[2].fn) == (0, 1, 1)


def test_unknown_pred_ids_are_an_error():
    gt = np.ones((4, 4), dtype=np.int64)
    pred = np.full((4, 4), 9)
    with pytest.raises(ValueError, match=r"segment ids \[9\]"):
        pq_compute_single_image(gt, [seg(1, 1)], pred, [seg(5, 1)])
    with pytest.raises(ValueError, match="must be equal"):
        pq_compute_single_image(gt, [seg(1, 1)], pred[:3], [seg(9, 1)])


# --------------------------------------------------------------------------------------------
# COCOPanopticEvaluator on a tiny on-disk dataset
# dataset ids: 1 person (thing), 3 car (thing), 7 sky (stuff); contiguous 0, 1, 2.
THING_MAP, STUFF_MAP = {1: 0, 3: 1}, {7: 2}
CLASSES = ["person", "car", "sky"]
SIZE = 32


def _gt_maps() -> list[tuple[np.ndarray, list[dict]]]:
    a = np.zeros((SIZE, SIZE), dtype=np.int64)
    a[:16], a[20:28, 2:12], a[20:30, 16:30] = 1, 2, 3  # sky, person, car; rest void
    b = np.full((SIZE, SIZE), 4)
    b[4:12, 4:12], b[16:24, 16:24], b[0:4, 20:32] = 5, 6, 7
    return [
        (a, [seg(1, 7), seg(2, 1), seg(3, 3)]),
        (b, [seg(4, 7), seg(5, 1), seg(6, 1), seg(7, 3, crowd=1)]),
    ]


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "panoptic_gt"
    root.mkdir()
    annotations = []
    for image_id, (ids, segs) in zip((11, 12), _gt_maps()):
        Image.fromarray(id_to_rgb(ids)).save(root / f"{image_id:06d}.png")
        for s in segs:
            s["area"] = int((ids == s["id"]).sum())
        annotations.append(
            {"image_id": image_id, "file_name": f"{image_id:06d}.png", "segments_info": segs}
        )
    categories = [
        {"id": 1, "name": "person", "isthing": 1},
        {"id": 3, "name": "car", "isthing": 1},
        {"id": 7, "name": "sky", "isthing": 0},
    ]
    json_file = tmp_path / "panoptic_gt.json"
    json_file.write_text(json.dumps({"annotations": annotations, "categories": categories}))
    name = f"test_panoptic_{uuid.uuid4().hex}"
    MetadataCatalog.get(name).set(
        panoptic_json=json_file,
        panoptic_root=root,
        stuff_classes=CLASSES,
        thing_dataset_id_to_contiguous_id=THING_MAP,
        stuff_dataset_id_to_contiguous_id=STUFF_MAP,
    )
    yield name
    MetadataCatalog.remove(name)


def _prediction(ids: np.ndarray, segs: list[dict], offset: int = 100) -> dict:
    """The GT itself as a model output: ids shifted by ``offset``, contiguous category ids."""
    to_contiguous = {**THING_MAP, **STUFF_MAP}
    info = [
        {
            "id": s["id"] + offset,
            "category_id": to_contiguous[s["category_id"]],
            "isthing": s["category_id"] != 7,
        }
        for s in segs
        if not s["iscrowd"]
    ]
    crowd = [s["id"] for s in segs if s["iscrowd"]]
    pred = np.where((ids > 0) & ~np.isin(ids, crowd), ids + offset, 0)
    return {"panoptic_seg": (torch.from_numpy(pred).int(), info)}


def _inputs() -> list[dict]:
    return [{"image_id": i, "height": SIZE, "width": SIZE} for i in (11, 12)]


@pytest.mark.parametrize("distributed", [False, True])
def test_evaluator_perfect(dataset, distributed):
    evaluator = COCOPanopticEvaluator(dataset, distributed=distributed)
    evaluator.reset()
    outputs = [_prediction(*m) for m in _gt_maps()]
    evaluator.process(_inputs()[:1], outputs[:1])
    evaluator.process(_inputs()[1:], outputs[1:])
    res = evaluator.evaluate()["panoptic_seg"]
    for key in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"):
        assert res[key] == pytest.approx(100.0), key
    assert {k for k in res if k.startswith("PQ-")} == {"PQ-person", "PQ-car", "PQ-sky"}


def test_evaluator_writes_rescorable_predictions(dataset, tmp_path):
    out_dir = tmp_path / "out"
    evaluator = COCOPanopticEvaluator(dataset, output_dir=str(out_dir), distributed=False)
    (a, a_segs), (b, b_segs) = _gt_maps()
    pa = _prediction(a, a_segs)
    pa["panoptic_seg"][0][16:, :] = 0  # person and car missed -> 2 FN
    pb = _prediction(b, b_segs)
    pb["panoptic_seg"][0][4:8, 4:12] = 0  # person 5 keeps 32 of 64 px: IoU 0.5 -> FP + FN
    pb["panoptic_seg"][1].append(
        {"id": 999, "category_id": 1, "isthing": True}
    )  # listed, no pixels
    evaluator.process(_inputs(), [pa, pb])
    res = evaluator.evaluate()["panoptic_seg"]
    # person: tp 1 (id 6), fp 1, fn 2 -> PQ = 1 / 2.5 = 40; car: tp 0, fn 1 -> 0; sky: 100.
    assert res["PQ-person"] == pytest.approx(40.0)
    assert res["PQ-car"] == pytest.approx(0.0)
    assert res["PQ-sky"] == pytest.approx(100.0)
    assert res["PQ"] == pytest.approx(140.0 / 3)
    assert res["PQ_th"] == pytest.approx(20.0)
    pred_json = out_dir / "predictions.json"
    data = json.loads(pred_json.read_text())
    assert all(s["id"] != 999 for a in data["annotations"] for s in a["segments_info"])
    assert all(
        s["category_id"] in (1, 3, 7) for a in data["annotations"] for s in a["segments_info"]
    )
    meta = MetadataCatalog.get(dataset)
    stat, categories = pq_compute_from_files(
        meta.panoptic_json,
        meta.panoptic_root,
        str(pred_json),
        str(out_dir / "panoptic_predictions"),
    )
    for key, isthing in (("PQ", None), ("PQ_th", True), ("PQ_st", False)):
        avg, _ = stat.pq_average(categories, isthing)
        assert 100 * avg["pq"] == pytest.approx(res[key]), key
    png = read_panoptic_png(str(out_dir / "panoptic_predictions" / "000012.png"))
    assert np.array_equal(png, pb["panoptic_seg"][0].numpy())
    assert not [f for f in os.listdir(out_dir) if ".tmp" in f]


def test_evaluator_errors(dataset, tmp_path):
    with pytest.raises(ValueError, match="'panoptic_root'.*MetadataCatalog.get"):
        name = f"test_panoptic_{uuid.uuid4().hex}"
        MetadataCatalog.get(name).set(panoptic_json="x.json")
        COCOPanopticEvaluator(name)
    evaluator = COCOPanopticEvaluator(dataset, distributed=False)
    (a, a_segs), _ = _gt_maps()
    good = _prediction(a, a_segs)
    with pytest.raises(ValueError, match=r"\(32, 32\).*\(20, 32\)"):
        evaluator.process([{"image_id": 11, "height": 20, "width": 32}], [good])
    bad = _prediction(a, a_segs)
    bad["panoptic_seg"][1][0]["category_id"] = 5
    with pytest.raises(ValueError, match="category_id 5, outside the contiguous space"):
        evaluator.process(_inputs()[:1], [bad])
    os.remove(os.path.join(MetadataCatalog.get(dataset).panoptic_root, "000011.png"))
    with pytest.raises(FileNotFoundError, match="000011.png"):
        evaluator.process(_inputs()[:1], [good])


# --------------------------------------------------------------------------------------------
# Cross-check with torchmetrics.detection.PanopticQuality.
# Conventions where torchmetrics differs from COCO pq_compute (so the random cases avoid them):
#  * predicted void: torchmetrics also removes GT pixels on predicted void from the union and
#    drops unmatched GT segments mostly covered by predicted void (COCO counts them as FN);
#    -> the random predictions cover every pixel.
#  * no crowd regions in torchmetrics; -> no crowd GT.
#  * stuff: torchmetrics merges all pixels of a stuff category into one segment; -> one
#    segment per stuff category in GT and prediction.
#  * zero-area GT segments listed in segments_info are FN for COCO, invisible to torchmetrics.
# Averaging agrees: mean over categories with tp + fp + fn > 0, statistics summed over images.
TM_THINGS, TM_STUFFS, TM_VOID_CAT = (1, 2), (5, 6), 9


def _render(rng, rects, split, void_rect):
    """Stuff 5 left of ``split``, 6 right; thing rectangles on top; optional void (GT only)."""
    cats = np.where(np.arange(24)[None, :] < split, 5, 6).repeat(24, 0)
    inst = np.zeros((24, 24), dtype=np.int64)
    for k, (cat, y0, x0, y1, x1) in enumerate(rects, start=1):
        cats[y0:y1, x0:x1], inst[y0:y1, x0:x1] = cat, k
    if void_rect is not None:
        y0, x0, y1, x1 = void_rect
        cats[y0:y1, x0:x1], inst[y0:y1, x0:x1] = TM_VOID_CAT, 0
    ids = np.zeros((24, 24), dtype=np.int64)
    segs = []
    for cat, k in sorted({(int(c), int(i)) for c, i in zip(cats.ravel(), inst.ravel())}):
        if cat == TM_VOID_CAT:
            continue
        sid = 1 + len(segs) + int(rng.integers(0, 50)) * 100  # arbitrary, unique ids
        ids[(cats == cat) & (inst == k)] = sid
        segs.append(seg(sid, cat))
    tm = np.stack([cats, np.where(np.isin(cats, TM_STUFFS), 0, inst)], -1)
    return ids, segs, torch.from_numpy(tm)


def test_matches_torchmetrics_without_crowd():
    tm_detection = pytest.importorskip("torchmetrics.detection")
    rng = np.random.default_rng(0)
    metric = tm_detection.PanopticQuality(
        things=set(TM_THINGS), stuffs=set(TM_STUFFS), return_sq_and_rq=True
    )
    total = PQStat()
    for _ in range(6):
        rects = []
        for _ in range(int(rng.integers(2, 5))):
            y0, x0 = (int(v) for v in rng.integers(0, 16, 2))
            h, w = (int(v) for v in rng.integers(4, 9, 2))
            rects.append((int(rng.choice(TM_THINGS)), y0, x0, y0 + h, x0 + w))
        pred_rects = []
        for cat, y0, x0, y1, x1 in rects:
            if rng.random() < 0.2:
                continue
            if rng.random() < 0.2:
                cat = 3 - cat
            dy, dx = (int(v) for v in rng.integers(-3, 4, 2))
            pred_rects.append((cat, max(y0 + dy, 0), max(x0 + dx, 0), y1 + dy, x1 + dx))
        split = int(rng.integers(6, 18))
        y0, x0 = (int(v) for v in rng.integers(0, 20, 2))
        gt_ids, gt_segs, gt_tm = _render(rng, rects, split, (y0, x0, y0 + 4, x0 + 4))
        pred_ids, pred_segs, pred_tm = _render(
            rng, pred_rects, split + int(rng.integers(-4, 5)), None
        )
        total += pq_compute_single_image(gt_ids, gt_segs, pred_ids, pred_segs)
        metric.update(pred_tm[None], gt_tm[None])
    categories = {c: {"isthing": c in TM_THINGS} for c in TM_THINGS + TM_STUFFS}
    ours, _ = total.pq_average(categories)
    theirs = metric.compute().double()
    assert ours["n"] == 4
    # torchmetrics keeps its state in float32 (tolerance 1e-6); the raw counts must agree exactly.
    assert [ours["pq"], ours["sq"], ours["rq"]] == pytest.approx(theirs.tolist(), abs=1e-6)
    for k, cat in enumerate(TM_THINGS + TM_STUFFS):  # torchmetrics order: sorted things, stuffs
        s = total[cat]
        assert (s.tp, s.fp, s.fn) == (
            int(metric.true_positives[k]),
            int(metric.false_positives[k]),
            int(metric.false_negatives[k]),
        ), cat
        assert s.iou_sum == pytest.approx(float(metric.iou_sum[k]), abs=1e-6)
    assert sum(s.fp + s.fn for s in total.per_category.values()) > 0  # not a trivial case
