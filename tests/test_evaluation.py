"""COCOEvaluator and inference_on_dataset on a tiny COCO dataset written to a tmp dir."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import socket
import sys
import uuid

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from mrdetr.data.catalog import DatasetCatalog, MetadataCatalog
from mrdetr.evaluation import (
    COCOEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    inference_on_dataset,
    instances_to_coco_json,
    print_csv_format,
)
from mrdetr.structures import Boxes, Instances

# Non-contiguous dataset category ids -> contiguous ids 0..2.
CATEGORIES = [(3, "cat"), (7, "dog"), (11, "bird"), (15, "zebra")]  # no zebra in the images
ID_MAP = {cid: i for i, (cid, _) in enumerate(CATEGORIES)}
# image id -> (height, width, [(category id, x, y, w, h)]); image 9 has no objects.
IMAGES = {
    1: (64, 80, [(3, 10, 12, 30, 25), (7, 45, 30, 20, 30), (3, 50, 2, 20, 15)]),
    2: (50, 50, [(11, 5, 5, 40, 40), (3, 20, 20, 12, 10)]),
    4: (40, 60, [(7, 0, 0, 25, 20)]),
    9: (32, 32, []),
}


def _write_coco_json(path: str) -> None:
    images, annotations = [], []
    for img_id, (h, w, objs) in IMAGES.items():
        images.append({"id": img_id, "height": h, "width": w, "file_name": f"{img_id}.jpg"})
        for cid, x, y, bw, bh in objs:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img_id,
                    "category_id": cid,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                    "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]],
                }
            )
    cats = [{"id": cid, "name": name} for cid, name in CATEGORIES]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": cats}, f)


def _register(name: str, json_file: str) -> None:
    """Register a COCO json the way ``register_coco_instances`` will (kept local on purpose)."""
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(
        json_file=json_file,
        thing_classes=[n for _, n in CATEGORIES],
        thing_dataset_id_to_contiguous_id=ID_MAP,
    )


@pytest.fixture()
def dataset(tmp_path):
    json_file = str(tmp_path / "instances.json")
    _write_coco_json(json_file)
    name = f"tiny_coco_{uuid.uuid4().hex[:8]}"
    _register(name, json_file)
    yield name, json_file
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _gt_predictions(json_file: str, *, with_masks: bool) -> dict[int, Instances]:
    """Per image: the ground truth as predictions (score 1 - small rank offset)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(json_file)
    preds = {}
    for img_id, (h, w, _) in IMAGES.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        fields = {
            "pred_boxes": Boxes(boxes),
            "scores": torch.linspace(0.9, 0.8, len(anns)),
            "pred_classes": torch.tensor(
                [ID_MAP[a["category_id"]] for a in anns], dtype=torch.long
            ),
        }
        if with_masks:
            masks = [torch.from_numpy(coco.annToMask(a)).bool() for a in anns]
            fields["pred_masks"] = (
                torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=torch.bool)
            )
        preds[img_id] = Instances((h, w), **fields)
    return preds


def _run(evaluator: COCOEvaluator, preds: dict[int, Instances]) -> dict:
    evaluator.reset()
    for img_id, inst in preds.items():
        evaluator.process([{"image_id": img_id}], [{"instances": inst}])
    return evaluator.evaluate()


def _direct_stats(json_file: str, results: list[dict], iou_type: str, max_dets: tuple) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_file)
        coco_eval = COCOeval(gt, gt.loadRes(results), iou_type)
        coco_eval.params.maxDets = list(max_dets)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def test_perfect_predictions_give_ap_100(dataset, tmp_path):
    name, json_file = dataset
    evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "out"))  # distributed, 1 process
    results = _run(evaluator, _gt_predictions(json_file, with_masks=True))
    assert set(results) == {"bbox", "segm"}  # segm added automatically from pred_masks
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == pytest.approx(100.0)
        assert results[task]["AP50"] == pytest.approx(100.0)
        assert results[task]["AP75"] == pytest.approx(100.0)
        for _, cname in CATEGORIES[:-1]:
            assert results[task][f"AP-{cname}"] == pytest.approx(100.0)
        assert "AP-zebra" not in results[task]  # no ground truth: left out


def test_imperfect_predictions_match_direct_cocoeval(dataset):
    name, json_file = dataset
    preds = _gt_predictions(json_file, with_masks=False)
    # image 1: shift the dog box by 6 px; image 2: drop the cat; image 4: add a low-score false positive
    preds[1].pred_boxes.tensor[1] += torch.tensor([6.0, 0.0, 6.0, 0.0])
    preds[2] = preds[2][torch.tensor([True, False])]
    extra = Instances(
        (40, 60),
        pred_boxes=Boxes(torch.tensor([[30.0, 10.0, 50.0, 35.0]])),
        scores=torch.tensor([0.95]),
        pred_classes=torch.tensor([1]),
    )
    preds[4] = Instances.cat([preds[4], extra])
    results = _run(COCOEvaluator(name, distributed=False), preds)
    assert set(results) == {"bbox"}

    # the same results written independently, with dataset category ids
    direct = []
    for img_id, inst in preds.items():
        for box, score, cls in zip(
            inst.pred_boxes.tensor.tolist(), inst.scores.tolist(), inst.pred_classes.tolist()
        ):
            x0, y0, x1, y1 = box
            direct.append(
                {
                    "image_id": img_id,
                    "category_id": CATEGORIES[cls][0],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": score,
                }
            )
    ref = _direct_stats(json_file, direct, "bbox", (1, 10, 100))
    for i, key in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
        expected = ref.stats[i] * 100 if ref.stats[i] >= 0 else math.nan
        assert results["bbox"][key] == pytest.approx(expected, nan_ok=True), key
    assert 0 < results["bbox"]["AP"] < 100
    for k, (cid, cname) in enumerate(CATEGORIES):
        assert ref.params.catIds[k] == cid
        p = ref.eval["precision"][:, :, k, 0, -1]
        if cname == "zebra":
            assert (p == -1).all() and f"AP-{cname}" not in results["bbox"]
            continue
        assert results["bbox"][f"AP-{cname}"] == pytest.approx(p[p > -1].mean() * 100)


def test_max_dets_per_image_is_applied(dataset):
    name, json_file = dataset
    preds = _gt_predictions(json_file, with_masks=False)
    results = _run(COCOEvaluator(name, distributed=False, max_dets_per_image=1), preds)
    direct = [
        r
        for img_id, inst in preds.items()
        for r in instances_to_coco_json(inst, img_id, {v: k for k, v in ID_MAP.items()})
    ]
    ref = _direct_stats(json_file, direct, "bbox", (1, 1, 1))
    p = ref.eval["precision"][:, :, :, 0, 2]
    assert results["bbox"]["AP"] == pytest.approx(p[p > -1].mean() * 100)
    assert results["bbox"]["AP50"] == pytest.approx(ref.stats[1] * 100)
    assert results["bbox"]["AP"] < 100  # one detection per image and class misses a cat


def test_results_json_written_with_dataset_ids(dataset, tmp_path):
    name, json_file = dataset
    out = tmp_path / "inference"
    evaluator = COCOEvaluator(name, output_dir=str(out), distributed=False)
    _run(evaluator, _gt_predictions(json_file, with_masks=True))
    assert sorted(os.listdir(out)) == ["coco_instances_results.json", "instances_predictions.pth"]
    with open(out / "coco_instances_results.json") as f:
        written = json.load(f)
    with open(json_file) as f:
        gt = json.load(f)["annotations"]
    assert len(written) == len(gt)
    assert sorted((r["image_id"], r["category_id"]) for r in written) == sorted(
        (a["image_id"], a["category_id"]) for a in gt
    )
    for r in written:
        assert isinstance(r["segmentation"]["counts"], str)
        assert len(r["bbox"]) == 4
    saved = torch.load(out / "instances_predictions.pth", weights_only=False)
    assert sorted(p["image_id"] for p in saved) == sorted(IMAGES)


def test_empty_predictions_warn_and_give_zeros(dataset, caplog):
    name, _ = dataset
    evaluator = COCOEvaluator(name, distributed=False)
    with caplog.at_level(logging.WARNING, logger="mrdetr.evaluation"):
        assert evaluator.evaluate() == {
            "bbox": dict.fromkeys(("AP", "AP50", "AP75", "APs", "APm", "APl"), 0.0)
        }
    assert "no predictions" in caplog.text
    empty = Instances(
        (32, 32),
        pred_boxes=Boxes(torch.zeros(0, 4)),
        scores=torch.zeros(0),
        pred_classes=torch.zeros(0, dtype=torch.long),
    )
    results = _run(evaluator, {9: empty, 1: empty})
    assert results["bbox"]["AP"] == 0.0


def test_faster_coco_eval_matches_pycocotools(dataset):
    pytest.importorskip("faster_coco_eval")
    name, json_file = dataset
    preds = _gt_predictions(json_file, with_masks=True)
    preds[1].pred_boxes.tensor[0] += 4.0
    preds[2].pred_masks[0, :10] = False
    ref = _run(COCOEvaluator(name, distributed=False), preds)
    fast = _run(COCOEvaluator(name, distributed=False, backend="faster_coco_eval"), preds)
    assert set(fast) == set(ref) == {"bbox", "segm"}
    for task in ref:
        assert set(fast[task]) == set(ref[task])
        for key, value in ref[task].items():
            assert fast[task][key] == pytest.approx(value, abs=1e-6, nan_ok=True), (task, key)
    assert ref["bbox"]["AP"] < 100 and ref["segm"]["AP"] < 100


def test_bad_arguments_raise_clear_errors(dataset, monkeypatch):
    name, json_file = dataset
    with pytest.raises(ValueError, match="unknown backend 'cocoapi'"):
        COCOEvaluator(name, backend="cocoapi")
    with pytest.raises(ValueError, match="tasks"):
        COCOEvaluator(name, tasks=("keypoints",))
    with pytest.raises(ValueError, match="no 'json_file'"):
        COCOEvaluator(f"unregistered_{uuid.uuid4().hex[:8]}")
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install faster-coco-eval"):
        COCOEvaluator(name, backend="faster_coco_eval")
    evaluator = COCOEvaluator(name, distributed=False)
    with pytest.raises(ValueError, match=r"image ids \[123\]"):
        _run(evaluator, {123: _gt_predictions(json_file, with_masks=False)[1]})
    with pytest.raises(KeyError, match="image_id"):
        evaluator.process([{"file_name": "x.jpg"}], [{"instances": None}])


class _GTModel(nn.Module):
    """Returns stored predictions for each input's image id; records its mode during calls."""

    def __init__(self, preds: dict[int, Instances]):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.preds = preds
        self.seen: list[tuple[bool, bool, bool]] = []

    def forward(self, inputs: list[dict]) -> list[dict]:
        self.seen.append((self.training, torch.is_grad_enabled(), torch.is_autocast_enabled("cpu")))
        return [{"instances": self.preds[x["image_id"]]} for x in inputs]


def test_inference_on_dataset_restores_mode_and_evaluates(dataset, caplog):
    name, json_file = dataset
    model = _GTModel(_gt_predictions(json_file, with_masks=False))
    model.train()
    loader = [[{"image_id": 1}, {"image_id": 2}], [{"image_id": 4}], [{"image_id": 9}]]
    evaluator = COCOEvaluator(name, distributed=False)
    with caplog.at_level(logging.INFO, logger="mrdetr.evaluation"):
        results = inference_on_dataset(
            model, loader, evaluator, amp_dtype=torch.bfloat16, log_period_s=0
        )
        print_csv_format(results)
    assert model.training
    assert model.seen == [(False, False, True)] * 3
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert "Total inference time" in caplog.text and "4 images" in caplog.text
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in caplog.text
    assert "AP-cat" not in caplog.text.split("copypaste: Task: bbox")[1]

    model.eval()
    inference_on_dataset(model, iter(loader), None)  # no len(), no evaluator
    assert not model.training and model.seen[-1] == (False, False, False)


def test_dataset_evaluators_merge_and_reject_duplicates():
    class _Fixed(DatasetEvaluator):
        def __init__(self, task: str):
            self.task, self.count = task, 0

        def process(self, inputs, outputs):
            self.count += len(inputs)

        def evaluate(self):
            return {self.task: {"n": self.count}}

    merged = DatasetEvaluators([_Fixed("a"), _Fixed("b")])
    merged.process([{}, {}], [{}, {}])
    assert merged.evaluate() == {"a": {"n": 2}, "b": {"n": 2}}
    with pytest.raises(KeyError, match="task 'a'"):
        DatasetEvaluators([_Fixed("a"), _Fixed("a")]).evaluate()


def _distributed_worker(rank: int, port: int, json_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        name = "tiny_coco_dist"
        _register(name, json_file)
        preds = _gt_predictions(json_file, with_masks=False)
        evaluator = COCOEvaluator(name, output_dir=out_dir)
        for img_id in sorted(preds)[rank::2]:  # each rank sees half of the images
            evaluator.process([{"image_id": img_id}], [{"instances": preds[img_id]}])
        torch.save(evaluator.evaluate(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_evaluation_gathers_on_main_process(dataset, tmp_path):
    _, json_file = dataset
    out = str(tmp_path / "dist")
    os.makedirs(out)
    mp.spawn(_distributed_worker, args=(_free_port(), json_file, out), nprocs=2)
    main = torch.load(os.path.join(out, "rank0.pt"), weights_only=False)
    assert main["bbox"]["AP"] == pytest.approx(100.0)
    assert torch.load(os.path.join(out, "rank1.pt"), weights_only=False) == {}
    with open(os.path.join(out, "coco_instances_results.json")) as f:
        assert len(json.load(f)) == sum(len(objs) for _, _, objs in IMAGES.values())


def test_instances_to_coco_json_rejects_soft_masks_and_unknown_classes():
    inst = Instances(
        (4, 4),
        pred_boxes=Boxes(torch.tensor([[0.0, 0.0, 2.0, 3.0]])),
        scores=torch.tensor([0.5]),
        pred_classes=torch.tensor([0]),
    )
    out = instances_to_coco_json(inst, 7, {0: 3})
    assert out == [{"image_id": 7, "category_id": 3, "bbox": [0.0, 0.0, 2.0, 3.0], "score": 0.5}]
    with pytest.raises(KeyError, match=r"\[0\]"):
        instances_to_coco_json(inst, 7, {1: 3})
    inst.pred_masks = torch.rand(1, 4, 4)
    with pytest.raises(TypeError, match="bool"):
        instances_to_coco_json(inst, 7)
    inst.pred_masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    inst.pred_masks[0, 1:3, 0:2] = True
    rle = instances_to_coco_json(inst, 7)[0]["segmentation"]
    decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_array_equal(decoded, inst.pred_masks[0].numpy().astype(np.uint8))
