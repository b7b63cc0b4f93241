"""Tools, demo, predictor and data loading under hostile input (cases of docs/reliability.md)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_inputs import (
    TINY_CONFIG,
    run_demo,
    tiny_checkpoint,
    write_bomb_png,
    write_image,
    write_truncated_jpeg,
)

from mrdetr.data import DetrDatasetMapper
from mrdetr.data.coco import load_coco_json
from mrdetr.data.detection_utils import BadImageError, read_image
from mrdetr.engine.predictor import Predictor
from mrdetr.tools._cli import run_cli
from mrdetr.tools.model_mean import main as mean_main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pth")


# ------------------------------------------------------------------------------------ F3
@pytest.fixture
def run_folder(tmp_path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    for it, value in ((1, 1.0), (2, 3.0)):
        sd = {"w": torch.full((2, 2), value)}
        torch.save({"model": sd, "optimizer": {}, "iteration": it}, folder / f"model_{it:07d}.pth")
    torch.save({"model": {"w": torch.zeros(2, 2)}, "iteration": 9}, folder / "model_final.pth")
    (folder / "last_checkpoint").write_text("model_final.pth")
    return folder


@pytest.mark.parametrize(
    "output", ["model_0000002.pth", "model_final.pth", "last_checkpoint", "config.yaml"]
)
def test_model_mean_never_replaces_a_run_file(run_folder, output, capsys) -> None:
    target = run_folder / output
    before = target.read_bytes() if target.exists() else None
    argv = ["-n", str(run_folder), "--iters", "1,2", "--weights", "0.5,0.5", "--output", output]
    assert run_cli(mean_main, argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --output") and ("refusing" in err or "input checkpoints" in err)
    assert (target.read_bytes() if target.exists() else None) == before


def test_model_mean_stays_inside_folder_unless_allowed(run_folder, capsys) -> None:
    outside = run_folder.parent / "x.pth"
    argv = ["-n", str(run_folder), "--iters", "1,2", "--weights", "0.5,0.5", "--output", "../x.pth"]
    assert run_cli(mean_main, argv) == 1
    assert "outside --folder" in capsys.readouterr().err and not outside.exists()
    assert run_cli(mean_main, [*argv, "--allow-outside-folder"]) == 0
    mean = torch.load(outside, weights_only=True)["model"]["w"]
    assert torch.equal(mean, torch.full((2, 2), 2.0))


# ------------------------------------------------------------------------------------ F4
def test_decompression_bomb_is_a_bad_image(tmp_path, ckpt, capsys) -> None:
    bomb = tmp_path / "bomb.png"
    write_bomb_png(bomb)
    with pytest.raises(BadImageError, match="bomb.png"):
        read_image(str(bomb))
    mapper = DetrDatasetMapper(is_train=True, augmentation=lambda s: s, on_bad_image="skip")
    record = {"file_name": str(bomb), "image_id": 0, "annotations": []}
    assert mapper(record) is None  # the loaders' skip policy applies
    rc, err = run_demo(["--input", str(bomb), "--output", str(tmp_path / "out")], ckpt, capsys)
    assert rc == 1 and "bomb.png" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "bomb.png").exists()


# ------------------------------------------------------------------------------------ F5
def test_demo_checks_every_input_before_writing(tmp_path, ckpt, capsys) -> None:
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(6):
        write_image(src / f"a{i}.jpg", i)
    write_truncated_jpeg(src / "z_truncated.jpg", 9)  # sorted last: found only after 6 outputs
    out = tmp_path / "out"
    rc, err = run_demo(["--input", str(src), "--output", str(out)], ckpt, capsys)
    assert rc == 1 and "z_truncated.jpg" in err and "nothing was written" in err
    assert not out.exists() or os.listdir(out) == []
    rc, err = run_demo(["--input", str(src), "--output", str(out), "--skip-bad"], ckpt, capsys)
    assert rc == 1 and sorted(os.listdir(out)) == [f"a{i}.jpg" for i in range(6)]
    assert "1 of 7 input images could not be read" in err and "z_truncated.jpg" in err


# ------------------------------------------------------------------------------------ M1
def _coco(tmp_path: Path, boxes: list[list[float]]) -> Path:
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 32, "width": 32}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "bbox": box, "category_id": 1, "iscrowd": 0, "area": 0}
            for i, box in enumerate(boxes)
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_zero_size_boxes_are_counted_and_all_dropped_is_an_error(tmp_path, caplog) -> None:
    path = _coco(tmp_path, [[1, 1, 0, 5], [2, 2, 4, 0], [0, 0, 8, 8]])
    with caplog.at_level(logging.WARNING, logger="mrdetr.data.coco"):
        dicts = load_coco_json(path, tmp_path, "my_boxes")
    assert [a["bbox"] for a in dicts[0]["annotations"]] == [[0.0, 0.0, 8.0, 8.0]]
    assert "dropped 2 of 3 annotations with a zero-size box" in caplog.text
    assert "my_boxes" in caplog.text
    path = _coco(tmp_path, [[1, 1, 0, 5], [2, 2, 0, 0]])
    with pytest.raises(ValueError, match=r"dataset 'all_zero'.*all 2 annotations"):
        load_coco_json(path, tmp_path, "all_zero")


# ------------------------------------------------------------------------------------ M3
@pytest.fixture(scope="module")
def predictor(ckpt) -> Predictor:
    return Predictor(str(TINY_CONFIG), weights=ckpt, device="cpu", min_size_test=48,
                     max_size_test=96)  # fmt: skip


def test_predictor_extreme_aspect_ratio_and_nan_input(predictor) -> None:
    # too few encoder tokens for the tiny model's 30 queries: an error naming the input
    with pytest.raises(ValueError, match=r"image 0 \(1x5000 pixels, resized to 1x96\): .*tokens"):
        predictor(np.full((1, 5000, 3), 128, np.uint8))
    dets = predictor(np.full((30, 300, 3), 128, np.uint8), threshold=0.0)  # resized to 10x96
    assert dets.image_size == (30, 300) and len(dets) > 0
    boxes = dets.boxes
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 300).all()
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= 30).all()
    with pytest.raises(ValueError, match=r"image 0: 12288 of 12288 pixel values are NaN"):
        predictor(np.full((64, 64, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="image 1: .* NaN or inf"):
        predictor([torch.zeros(3, 8, 8), torch.full((3, 8, 8), float("inf"))])
