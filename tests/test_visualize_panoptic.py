"""draw_panoptic and the panoptic input of visualize_json_results: pictures, errors, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from tiny_model import REPO

from mrdetr.tools._cli import run_cli
from mrdetr.tools.visualize_json_results import main as vis_main
from mrdetr.utils.visualizer import class_color, draw_panoptic

GRAY = 100
ALPHA = 0.5


# ---------------------------------------------------------------------------------- draw_panoptic
def _two_segments() -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """64x64 gray image; rows < 40: id 1 (class 0) left of x=32, id 2 (class 1) right; rest void."""
    image = np.full((64, 64, 3), GRAY, dtype=np.uint8)
    ids = np.zeros((64, 64), dtype=np.int64)
    ids[:40, :32] = 1
    ids[:40, 32:] = 2
    segments = [
        {"id": 1, "category_id": 0, "isthing": True, "score": 0.9},
        {"id": 2, "category_id": 1, "isthing": False},
    ]
    return image, ids, segments


def _tint(cls: int) -> np.ndarray:
    return np.round(ALPHA * np.array(class_color(cls)) + (1 - ALPHA) * GRAY).astype(np.uint8)


def test_draw_panoptic_fills_segments_and_keeps_void():
    image, ids, segments = _two_segments()
    out = draw_panoptic(image, torch.from_numpy(ids), segments, alpha=ALPHA)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert (image == GRAY).all()  # input not modified
    # interior pixels far from the labels (which sit in the middle of each segment)
    np.testing.assert_array_equal(out[3:6, 3:10], np.broadcast_to(_tint(0), (3, 7, 3)))
    np.testing.assert_array_equal(out[3:6, 55:61], np.broadcast_to(_tint(1), (3, 6, 3)))
    # void rows away from the labels are unchanged
    np.testing.assert_array_equal(out[48:], image[48:])
    # the contour: the last row of segment 1 (above void) has the full class colour
    np.testing.assert_array_equal(out[39, 5], class_color(0))


def test_draw_panoptic_labels_and_instances():
    image, ids, segments = _two_segments()
    no_labels = draw_panoptic(image, ids, segments, min_label_radius=np.inf)
    labelled = draw_panoptic(image, ids, segments, ["disc", "sky"])
    numbered = draw_panoptic(image, ids, segments)
    white = labelled.min(axis=2) > 150  # white (anti-aliased) text; no fill is that light
    assert not (no_labels.min(axis=2) > 150).any()
    # text in both segments, at their interior
    assert white[:40, :32].any() and white[:40, 32:].any()
    assert (labelled != numbered).any()  # the names are drawn, not the ids
    # two thing instances of one class get different fills
    ids2 = ids.copy()
    ids2[:40, 32:] = 3
    things = [
        {"id": 1, "category_id": 0, "isthing": True},
        {"id": 3, "category_id": 0, "isthing": True},
    ]
    out = draw_panoptic(image, ids2, things, min_label_radius=np.inf)
    assert (out[5, 5] != out[5, 60]).any()
    # as stuff (one region per class) they share the colour
    stuff = [{**s, "isthing": False} for s in things]
    out = draw_panoptic(image, ids2, stuff, min_label_radius=np.inf)
    np.testing.assert_array_equal(out[5, 5], out[5, 60])


def test_draw_panoptic_bad_shape():
    image, ids, segments = _two_segments()
    with pytest.raises(ValueError, match=r"ids must be \[H, W\]"):
        draw_panoptic(image, ids[:10], segments)


# ------------------------------------------------------------------------------------- the tool
@pytest.fixture(scope="module")
def pan_root(tmp_path_factory):
    from mrdetr.data.synthetic_panoptic import generate_synthetic_panoptic_dataset

    root = tmp_path_factory.mktemp("datasets")
    paths = generate_synthetic_panoptic_dataset(
        root / "synthetic_panoptic", num_train=0, num_val=3, image_size=64, progress=False
    )
    with open(paths["val_json"]) as f:
        gt = json.load(f)
    return root, paths, gt


def _predictions(pan_root, folder, annotations=None) -> str:
    """A copy of the GT PNGs/JSON (dataset ids) as evaluator output in ``folder``."""
    _, paths, gt = pan_root
    shutil.copytree(paths["val_panoptic"], folder / "panoptic_predictions")
    data = {"annotations": gt["annotations"] if annotations is None else annotations,
            "categories": gt["categories"]}  # fmt: skip
    path = folder / "predictions.json"
    path.write_text(json.dumps(data))
    return str(path)


def _cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = run_cli(vis_main, argv)
    return rc, capsys.readouterr().err


def _halves(path: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    vis = cv2.imread(path).astype(int)
    return vis[:, :width], vis[:, -width:]


def test_cli_prediction_equals_ground_truth(pan_root, tmp_path):
    root, paths, gt = pan_root
    pred = _predictions(pan_root, tmp_path)
    out = tmp_path / "vis"
    args = ["--input", pred, "--output", str(out), "--dataset", "synthetic_panoptic_val"]
    proc = subprocess.run([sys.executable, str(REPO / "tools/visualize_json_results.py"), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MRDETR_DATASETS": str(root)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == sorted(img["file_name"] for img in gt["images"])
    for img in gt["images"]:
        w = img["width"]
        left, right = _halves(str(out / img["file_name"]), w)
        assert left.shape[0] == img["height"]
        # the same drawing up to JPEG noise (the halves sit on different 8x8 block grids) ...
        assert np.abs(left - right).mean() < 5
        # ... and a drawing: far from the plain image
        src = cv2.imread(os.path.join(paths["val_images"], img["file_name"])).astype(int)
        assert np.abs(left - src).mean() > 20
    # refuses to overwrite
    proc = subprocess.run([sys.executable, str(REPO / "tools/visualize_json_results.py"), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MRDETR_DATASETS": str(root)})  # fmt: skip
    assert proc.returncode != 0 and "already exists" in proc.stderr


def test_cli_missing_prediction_and_threshold(pan_root, tmp_path, capsys, monkeypatch):
    root, paths, gt = pan_root
    monkeypatch.setenv("MRDETR_DATASETS", str(root))
    first, second = gt["annotations"][0], gt["annotations"][1]
    scored = {**second, "segments_info": [{**s, "score": 0.1} for s in second["segments_info"]]}
    pred = _predictions(pan_root, tmp_path, [scored])  # no entry for the first image
    out = tmp_path / "vis"
    argv = ["--input", pred, "--output", str(out), "--dataset", "synthetic_panoptic_val",
            "--conf-threshold", "0.5"]  # fmt: skip
    rc, err = _cli(argv, capsys)
    assert rc == 0, err
    for anno in (first, second):  # no prediction / all below the threshold: the plain image
        name = anno["file_name"].replace(".png", ".jpg")
        src = cv2.imread(os.path.join(paths["val_images"], name)).astype(int)
        left, right = _halves(str(out / name), src.shape[1])
        assert np.abs(left - src).mean() < 3 < np.abs(right - src).mean()


def _error(argv, capsys) -> str:
    rc, err = _cli(argv, capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    return err


def test_cli_errors(pan_root, tmp_path, capsys, monkeypatch):
    root, paths, gt = pan_root
    monkeypatch.setenv("MRDETR_DATASETS", str(root))
    base = ["--dataset", "synthetic_panoptic_val", "--output", str(tmp_path / "vis")]
    anno = gt["annotations"][1]

    missing = tmp_path / "missing"
    missing.mkdir()
    pred = _predictions(pan_root, missing)
    os.remove(missing / "panoptic_predictions" / anno["file_name"])
    err = _error(["--input", pred, *base], capsys)
    assert anno["file_name"] in err and f"image {anno['image_id']}" in err

    bad_cat = tmp_path / "bad_cat"
    bad_cat.mkdir()
    seg = {**anno["segments_info"][0], "category_id": 999}
    pred = _predictions(pan_root, bad_cat, [{**anno, "segments_info": [seg]}])
    err = _error(["--input", pred, *base], capsys)
    assert "999" in err and "category" in err

    bad_image = tmp_path / "bad_image"
    bad_image.mkdir()
    pred = _predictions(pan_root, bad_image, [{**anno, "image_id": 123456}])
    err = _error(["--input", pred, *base], capsys)
    assert "123456" in err

    neither = tmp_path / "neither.json"
    neither.write_text(json.dumps({"annotations": [{"image_id": 1}]}))
    err = _error(["--input", str(neither), *base], capsys)
    assert "panoptic" in err and "detections" in err
    assert not (tmp_path / "vis").exists()
