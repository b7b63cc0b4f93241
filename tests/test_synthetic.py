"""The synthetic shapes dataset: determinism, COCO content, loading, masks, atomic writes, CLI."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from mrdetr.data import DatasetCatalog, MetadataCatalog, register_coco_instances
from mrdetr.data import synthetic as syn
from mrdetr.data._shapes import COLOUR_HUES, class_specs
from mrdetr.data.detection_utils import rasterize_segmentation


def _gen(root, seed=0, **kw):
    return syn.generate_synthetic_dataset(
        root, 6, 4, seed=seed, image_size=64, progress=False, **kw
    )


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def _no_temp_dirs(parent):
    return not [n for n in os.listdir(parent) if n.startswith(".")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _gen(tmp_path_factory.mktemp("syn") / "synthetic", seed=2)


def test_same_seed_gives_identical_files(tmp_path):
    a, b, c = _files(_gen(tmp_path / "a")["root"]), _files(_gen(tmp_path / "b")["root"]), None
    assert a == b and len(a) == 6 + 4 + 2
    c = _files(_gen(tmp_path / "c", seed=1)["root"])
    assert c.keys() == a.keys() and c != a


def test_coco_content(dataset):
    for split, count in (("train", 6), ("val", 4)):
        data = json.loads(open(dataset[f"{split}_json"]).read())
        cats = data["categories"]
        assert [c["id"] for c in cats] == [1, 3, 5, 7, 9, 11]  # not contiguous on purpose
        assert len({c["name"] for c in cats}) == 6
        assert len(data["images"]) == count
        sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
        assert max(max(s) for s in sizes.values()) == 64
        with_objects = {a["image_id"] for a in data["annotations"]}
        assert 4 not in with_objects  # image index 3 (id 4) is one of the empty images
        assert len(with_objects) == count - 1
        for anno in data["annotations"]:
            x, y, w, h = anno["bbox"]
            im_h, im_w = sizes[anno["image_id"]]
            assert anno["iscrowd"] == 0 and w > 0 and h > 0 and anno["area"] > 0
            assert x >= 0 and y >= 0 and x + w <= im_w and y + h <= im_h
            path = os.path.join(dataset[f"{split}_images"], f"{anno['image_id'] - 1:06d}.jpg")
            assert Image.open(path).size == (im_w, im_h)
        assert data["info"]["generator"]["seed"] == 2


def test_loads_via_register_coco_instances_and_masks_match_boxes(dataset):
    name = "syn_test_train"
    register_coco_instances(name, {}, dataset["train_json"], dataset["train_images"])
    try:
        dicts = DatasetCatalog.get(name)
        meta = MetadataCatalog.get(name)
        assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 3: 1, 5: 2, 7: 3, 9: 4, 11: 5}
        assert meta.thing_classes == [f"{c}_{s}" for s, c in class_specs(6)]
        areas = [a["area"] for a in json.loads(open(dataset["train_json"]).read())["annotations"]]
        anno_index = 0
        for d in dicts:
            for anno in d["annotations"]:
                assert 0 <= anno["category_id"] < 6
                mask = rasterize_segmentation(anno["segmentation"], d["height"], d["width"])
                ys, xs = np.nonzero(mask)
                x, y, w, h = anno["bbox"]
                # pixels never leave the box; sharp vertices (triangle apex) lose < 2 px
                assert x - 0.5 <= xs.min() <= x + 2 and x + w - 2 <= xs.max() + 1 <= x + w + 0.5
                assert y - 0.5 <= ys.min() <= y + 2 and y + h - 2 <= ys.max() + 1 <= y + h + 0.5
                assert mask.sum() == areas[anno_index]
                anno_index += 1
        assert anno_index == len(areas) > 0
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_objects_have_their_class_colour(dataset):
    data = json.loads(open(dataset["train_json"]).read())
    colour_of = {2 * k + 1: colour for k, (_, colour) in enumerate(class_specs(6))}
    checked = 0
    for im in data["images"]:
        rgb = np.asarray(Image.open(os.path.join(dataset["train_images"], im["file_name"])))
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        annos = [a for a in data["annotations"] if a["image_id"] == im["id"]]
        masks = [
            rasterize_segmentation(a["segmentation"], im["height"], im["width"]) for a in annos
        ]
        for i, anno in enumerate(annos):
            visible = masks[i] & ~np.any(masks[i + 1 :], axis=0) if i + 1 < len(masks) else masks[i]
            interior = cv2.erode(visible.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            if interior.sum() < 10:
                continue
            hue = np.median(hsv[..., 0][interior]) / 180.0
            expected = COLOUR_HUES[colour_of[anno["category_id"]]]
            assert min(abs(hue - expected), 1 - abs(hue - expected)) < 0.06
            assert np.median(hsv[..., 1][interior]) > 140  # saturated, unlike the background
            checked += 1
    assert checked >= 3


def test_atomic_write_overwrite_and_interruption(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    first = _gen(out)
    with pytest.raises(FileExistsError, match="overwrite"):
        _gen(out)
    before = open(first["train_json"]).read()
    _gen(out, seed=5, overwrite=True)
    assert open(first["train_json"]).read() != before
    assert _no_temp_dirs(tmp_path)

    real = syn._write_split

    def interrupted(root, split, *args):
        real(root, split, *args)
        if split == "train":
            raise KeyboardInterrupt

    monkeypatch.setattr(syn, "_write_split", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _gen(tmp_path / "half")
    assert not (tmp_path / "half").exists() and _no_temp_dirs(tmp_path)


def test_ensure_synthetic_dataset_generates_once(tmp_path, monkeypatch):
    kw = {"num_train": 3, "num_val": 2, "image_size": 32, "progress": False}
    path = syn.ensure_synthetic_dataset(tmp_path, **kw)
    assert path == str(tmp_path / "synthetic") and syn._is_complete(path)

    def fail(*args, **kwargs):
        raise AssertionError("must not regenerate")

    monkeypatch.setattr(syn, "generate_synthetic_dataset", fail)
    assert syn.ensure_synthetic_dataset(tmp_path, **kw) == path
    monkeypatch.setenv("MRDETR_DATASETS", str(tmp_path))
    assert syn.ensure_synthetic_dataset() == path


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    paths = syn.main(["--output", str(out), "--num-train", "2", "--num-val", "1", "--image-size", "32",
                      "--num-classes", "3", "--seed", "4", "--format", "png", "--quiet"])  # fmt: skip
    printed = capsys.readouterr().out
    assert f"train_json: {paths['train_json']}" in printed
    data = json.loads(open(paths["val_json"]).read())
    assert [c["id"] for c in data["categories"]] == [1, 3, 5]
    assert sorted(os.listdir(paths["train_images"])) == ["000000.png", "000001.png"]


def test_cli_if_missing_generates_once(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--output", str(out), "--num-train", "2", "--num-val", "1", "--image-size", "32",
            "--quiet", "--if-missing"]  # fmt: skip
    paths = syn.main(args)
    stamp = os.path.getmtime(paths["train_json"])
    assert syn.main(args) == {}
    assert "nothing to do" in capsys.readouterr().out
    assert os.path.getmtime(paths["train_json"]) == stamp
    with pytest.raises(Exception, match="already exists"):
        syn.main(args[:-1])  # without --if-missing an existing dataset is an error


def test_rasterize_takes_a_bitmask_of_the_image_size():
    bitmask = np.zeros((4, 5), dtype=np.uint8)
    bitmask[1:3, 2:4] = 7
    mask = rasterize_segmentation(bitmask, 4, 5)
    assert mask.dtype == bool and mask.sum() == 4 and mask[1:3, 2:4].all()
    with pytest.raises(
        ValueError, match=r"bitmask shape \(4, 5\) does not match the image size \(5, 4\)"
    ):
        rasterize_segmentation(bitmask, 5, 4)
