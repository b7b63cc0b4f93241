"""COCO-panoptic data layer: id <-> colour, synthetic panoptic generator, loader, mapper, builtins."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from mrdetr.data import (
    BadImageError,
    DatasetCatalog,
    MetadataCatalog,
    PanopticDatasetMapper,
    build_detr_train_transform,
    id2rgb,
    load_coco_panoptic_json,
    register_coco_panoptic,
    rgb2id,
)
from mrdetr.data import synthetic_panoptic as sp

NUM_THINGS, NUM_STUFF = 6, 3
THING_IDS = [1, 3, 5, 7, 9, 11]
STUFF_IDS = [13, 14, 15]


def _gen(root, seed=0, **kw):
    kw = {"num_train": 6, "num_val": 3, "image_size": 96, **kw}
    return sp.generate_synthetic_panoptic_dataset(root, seed=seed, progress=False, **kw)


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def _png_ids(path):
    return rgb2id(np.asarray(Image.open(path).convert("RGB")))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _gen(tmp_path_factory.mktemp("pan") / "synthetic_panoptic", seed=1)


@pytest.fixture()
def loaded(dataset):
    name = "pan_test_train"
    dicts = load_coco_panoptic_json(
        dataset["train_json"], dataset["train_images"], dataset["train_panoptic"], name
    )
    yield dicts, MetadataCatalog.get(name)
    MetadataCatalog.remove(name)


def test_rgb2id_id2rgb_round_trip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 1234567, 256**3 - 1]])
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    assert rgb[0, 3].tolist() == [0, 1, 0] and rgb[1, 1].tolist() == [0, 0, 1]
    np.testing.assert_array_equal(rgb2id(rgb), ids)
    assert rgb2id(np.array([1, 2, 3], dtype=np.uint8)) == 1 + 2 * 256 + 3 * 256**2
    with pytest.raises(ValueError, match="256"):
        id2rgb(np.array([256**3]))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        rgb2id(np.zeros((2, 2)))


def test_png_and_segments_info_agree(dataset):
    cats_seen: set[int] = set()
    for split, count in (("train", 6), ("val", 3)):
        data = json.loads(open(dataset[f"{split}_json"]).read())
        cats = {c["id"]: c for c in data["categories"]}
        assert sorted(cats) == THING_IDS + STUFF_IDS
        assert all(cats[i]["isthing"] == 1 for i in THING_IDS)
        assert all(cats[i]["isthing"] == 0 and len(cats[i]["color"]) == 3 for i in STUFF_IDS)
        assert len(data["images"]) == count == len(data["annotations"])
        sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
        for anno in data["annotations"]:
            ids = _png_ids(os.path.join(dataset[f"{split}_panoptic"], anno["file_name"]))
            assert ids.shape == sizes[anno["image_id"]] and max(ids.shape) == 96
            segs = {s["id"]: s for s in anno["segments_info"]}
            assert set(np.unique(ids).tolist()) - {0} == set(segs)
            assert (ids != 0).all()  # no void pixels in this generator
            stuff_in_image = [s["category_id"] for s in segs.values() if s["category_id"] > 11]
            assert len(stuff_in_image) == len(set(stuff_in_image))  # one merged segment per class
            for seg_id, seg in segs.items():
                ys, xs = np.nonzero(ids == seg_id)
                assert seg["area"] == len(xs) > 0 and seg["iscrowd"] == 0
                x0, y0 = xs.min(), ys.min()
                assert seg["bbox"] == [x0, y0, xs.max() - x0 + 1, ys.max() - y0 + 1]
                cats_seen.add(seg["category_id"])
    assert cats_seen & set(THING_IDS) and cats_seen & set(STUFF_IDS)
    assert len(cats_seen & set(STUFF_IDS)) >= 2


def test_generation_is_deterministic_for_a_seed(tmp_path):
    kw = {"num_train": 2, "num_val": 1, "image_size": 64}
    a = _files(_gen(tmp_path / "a", **kw)["root"])
    b = _files(_gen(tmp_path / "b", **kw)["root"])
    c = _files(_gen(tmp_path / "c", seed=5, **kw)["root"])
    assert a == b and len(a) == 2 * 3 + 2
    assert c.keys() == a.keys() and c != a
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temp dirs left
    with pytest.raises(FileExistsError, match="overwrite"):
        _gen(tmp_path / "a", **kw)


def test_loader_contiguous_ids_and_metadata(dataset, loaded):
    dicts, meta = loaded
    stuff_names = [n for n, *_ in sp.STUFF_SPECS[:NUM_STUFF]]
    assert meta.stuff_classes[NUM_THINGS:] == stuff_names and len(meta.stuff_classes) == 9
    assert meta.thing_classes == meta.stuff_classes[:NUM_THINGS]
    assert meta.thing_dataset_id_to_contiguous_id == {c: i for i, c in enumerate(THING_IDS)}
    assert meta.stuff_dataset_id_to_contiguous_id == {13: 6, 14: 7, 15: 8}
    assert len(meta.thing_colors) == NUM_THINGS and len(meta.stuff_colors) == 9
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert meta.panoptic_json == dataset["train_json"]
    assert meta.panoptic_root == dataset["train_panoptic"]
    data = json.loads(open(dataset["train_json"]).read())
    raw = {a["image_id"]: a for a in data["annotations"]}
    to_contig = {c: i for i, c in enumerate(THING_IDS + STUFF_IDS)}
    assert [d["image_id"] for d in dicts] == [1, 2, 3, 4, 5, 6]
    for d in dicts:
        assert os.path.isfile(d["file_name"]) and os.path.isfile(d["pan_seg_file_name"])
        segs = raw[d["image_id"]]["segments_info"]
        assert [s["id"] for s in d["segments_info"]] == [s["id"] for s in segs]
        assert [a["segment_id"] for a in d["annotations"]] == [s["id"] for s in segs]
        for seg, out, anno in zip(segs, d["segments_info"], d["annotations"]):
            assert out["category_id"] == anno["category_id"] == to_contig[seg["category_id"]]
            assert out["isthing"] is (seg["category_id"] in THING_IDS)
            assert anno["bbox"] == seg["bbox"] and anno["bbox_mode"] == "XYWH_ABS"


def _map(mapper, d):
    out = mapper(d)
    inst = out["instances"]
    return out, inst.gt_boxes.tensor, inst.gt_masks, inst.gt_classes


def test_mapper_masks_follow_the_png_and_classes(loaded):
    dicts, _ = loaded
    mapper = PanopticDatasetMapper(is_train=True, augmentation=[v2.Identity()])
    for d in dicts:
        out, boxes, masks, classes = _map(mapper, d)
        ids = torch.from_numpy(_png_ids(d["pan_seg_file_name"]))
        assert out["image"].shape[1:] == ids.shape and masks.dtype == torch.bool
        assert classes.tolist() == [a["category_id"] for a in d["annotations"]]
        for mask, anno in zip(masks, d["annotations"]):
            assert torch.equal(mask, ids == anno["segment_id"])
        # every pixel in exactly one mask: the segments partition the image
        assert (masks.sum(0) == 1).all()
        x, y, w, h = d["annotations"][0]["bbox"]
        assert boxes[0].tolist() == [x, y, x + w, y + h]


def test_mapper_train_transform_keeps_masks_inside_boxes(loaded):
    dicts, _ = loaded
    torch.manual_seed(0)
    # The official recipe, scaled down to tiny images (every resize shrinks, so nearest-neighbour
    # mask resizing stays within 1 px of the exactly scaled boxes).
    aug = build_detr_train_transform(
        min_sizes=(40, 48), max_size=96, crop_pre_sizes=(96,), crop_min_size=56, crop_max_size=72
    )
    mapper = PanopticDatasetMapper(is_train=True, augmentation=aug)
    num_checked = 0
    for d in dicts * 2:
        out, boxes, masks, classes = _map(mapper, d)
        assert masks.shape[1:] == out["image"].shape[1:] and len(masks) == len(boxes)
        assert classes.min() >= 0 and classes.max() < NUM_THINGS + NUM_STUFF
        for box, mask in zip(boxes, masks):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(xs) == 0:
                continue
            x0, y0, x1, y1 = box.tolist()
            # pixel indices of the mask within the box, +-1 px
            assert x0 - 1 <= xs.min() and xs.max() <= x1 + 1
            assert y0 - 1 <= ys.min() and ys.max() <= y1 + 1
            num_checked += 1
    assert num_checked > len(dicts)


def test_flip_moves_masks_and_boxes_together(loaded):
    d = loaded[0][0]
    _, boxes, masks, classes = _map(
        PanopticDatasetMapper(is_train=True, augmentation=[v2.Identity()]), d
    )
    out, fboxes, fmasks, fclasses = _map(
        PanopticDatasetMapper(is_train=True, augmentation=[v2.RandomHorizontalFlip(p=1.0)]), d
    )
    w = out["image"].shape[2]
    assert torch.equal(fmasks, masks.flip(-1)) and torch.equal(fclasses, classes)
    expected = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
    torch.testing.assert_close(fboxes, expected)


def test_mapper_drops_crowd_and_test_mode_carries_segments(loaded):
    d = dict(loaded[0][1])
    d["annotations"] = [dict(a) for a in d["annotations"]]
    d["annotations"][0]["iscrowd"] = 1
    _, boxes, _, _ = _map(PanopticDatasetMapper(is_train=True, augmentation=[v2.Identity()]), d)
    assert len(boxes) == len(d["annotations"]) - 1
    out = PanopticDatasetMapper(is_train=False, augmentation=[v2.Identity()])(loaded[0][1])
    assert "instances" not in out
    assert out["pan_seg_file_name"] == loaded[0][1]["pan_seg_file_name"]
    assert out["segments_info"] == loaded[0][1]["segments_info"]
    with pytest.raises(ValueError, match="mask_on"):
        PanopticDatasetMapper(is_train=True, augmentation=[v2.Identity()], mask_on=False)


def test_mapper_bad_png_errors(loaded, tmp_path):
    mapper = PanopticDatasetMapper(is_train=True, augmentation=[v2.Identity()])
    d = dict(loaded[0][0])
    d["pan_seg_file_name"] = str(tmp_path / "missing.png")
    with pytest.raises(BadImageError, match="missing.png"):
        mapper(d)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((5, 7, 3), dtype=np.uint8)).save(small)
    d["pan_seg_file_name"] = str(small)
    with pytest.raises(BadImageError) as info:
        mapper(d)
    assert "small.png" in str(info.value) and d["file_name"] in str(info.value)
    assert "(5, 7)" in str(info.value)


def _write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def test_loader_bad_inputs(dataset, tmp_path):
    args = (dataset["train_images"], dataset["train_panoptic"])
    data = json.loads(open(dataset["train_json"]).read())
    bad = json.loads(json.dumps(data))
    bad["annotations"][1]["segments_info"][0]["category_id"] = 999
    path = _write_json(tmp_path / "unknown_cat.json", bad)
    with pytest.raises(ValueError, match=r"unknown_cat\.json.*category_id 999"):
        load_coco_panoptic_json(path, *args)
    no_entry = {**data, "annotations": data["annotations"][1:]}
    path = _write_json(tmp_path / "no_entry.json", no_entry)
    with pytest.raises(ValueError, match=r"image 1 \('000000.jpg'\) has no entry"):
        load_coco_panoptic_json(path, *args)
    empty = json.loads(json.dumps(data))
    empty["annotations"][0]["segments_info"] = []
    path = _write_json(tmp_path / "empty.json", empty)
    assert load_coco_panoptic_json(path, *args)[0]["annotations"] == []  # fine
    instances = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    path = _write_json(tmp_path / "instances.json", instances)
    with pytest.raises(ValueError, match="not a COCO panoptic file.*isthing"):
        load_coco_panoptic_json(path, *args)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_coco_panoptic_json(tmp_path / "nope.json", *args)
    with pytest.raises(FileNotFoundError, match="Panoptic PNG folder.*no_pngs"):
        load_coco_panoptic_json(dataset["train_json"], args[0], tmp_path / "no_pngs")


def test_register_coco_panoptic_is_lazy(dataset, tmp_path):
    register_coco_panoptic("pan_lazy", {}, tmp_path / "i", tmp_path / "p", tmp_path / "x.json")
    register_coco_panoptic(
        "pan_real", {}, dataset["val_images"], dataset["val_panoptic"], dataset["val_json"]
    )
    try:
        assert MetadataCatalog.get("pan_lazy").evaluator_type == "coco_panoptic_seg"
        with pytest.raises(FileNotFoundError, match="x.json"):
            DatasetCatalog.get("pan_lazy")
        assert len(DatasetCatalog.get("pan_real")) == 3
        assert len(MetadataCatalog.get("pan_real").stuff_classes) == 9
    finally:
        for name in ("pan_lazy", "pan_real"):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_cli_and_if_missing(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "mrdetr.data.synthetic_panoptic", "--output", str(out)]
    cmd += ["--num-train", "2", "--num-val", "1", "--image-size", "64", "--quiet"]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "train_json" in first.stdout
    assert sorted(os.listdir(out / "panoptic_train")) == ["000000.png", "000001.png"]
    before = _files(out)
    second = subprocess.run([*cmd, "--if-missing"], capture_output=True, text=True, check=True)
    assert "nothing to do" in second.stdout and _files(out) == before


def test_builtins_registered_and_missing_data_message(tmp_path, monkeypatch):
    for name in ("coco_2017_train_panoptic", "coco_2017_val_panoptic"):
        meta = MetadataCatalog.get(name)
        assert name in DatasetCatalog and meta.evaluator_type == "coco_panoptic_seg"
        assert len(meta.stuff_classes) == 133 and len(meta.thing_classes) == 80
        assert meta.stuff_classes[80] == "banner" and meta.stuff_classes[-1] == "rug-merged"
        assert meta.thing_dataset_id_to_contiguous_id[90] == 79
        assert meta.stuff_dataset_id_to_contiguous_id[92] == 80
        assert meta.stuff_dataset_id_to_contiguous_id[200] == 132
    monkeypatch.setenv("MRDETR_DATASETS", str(tmp_path / "root"))
    val = MetadataCatalog.get("coco_2017_val_panoptic")
    assert os.fspath(val.panoptic_json) == str(
        tmp_path / "root/coco/annotations/panoptic_val2017.json"
    )
    assert os.fspath(val.panoptic_root) == str(tmp_path / "root/coco/panoptic_val2017")
    for name in ("coco_2017_val_panoptic", "synthetic_panoptic_train", "synthetic_panoptic_val"):
        assert name in DatasetCatalog
        with pytest.raises(FileNotFoundError) as info:
            DatasetCatalog.get(name)
        msg = str(info.value)
        assert "\n" not in msg and str(tmp_path / "root") in msg
        for hint in ("DETECTRON2_DATASETS", "python -m mrdetr.data.synthetic_panoptic"):
            assert hint in msg
        assert "register_coco_panoptic" in msg


def test_builtin_synthetic_panoptic_loads_from_root(dataset, tmp_path, monkeypatch):
    shutil.copytree(dataset["root"], tmp_path / "synthetic_panoptic")
    monkeypatch.setenv("MRDETR_DATASETS", str(tmp_path))
    dicts = DatasetCatalog.get("synthetic_panoptic_val")
    assert len(dicts) == 3 and all(os.path.isfile(d["pan_seg_file_name"]) for d in dicts)
    meta = MetadataCatalog.get("synthetic_panoptic_val")
    assert len(meta.stuff_classes) == 9 and meta.evaluator_type == "coco_panoptic_seg"
    assert sp.ensure_synthetic_panoptic_dataset() == str(tmp_path / "synthetic_panoptic")
