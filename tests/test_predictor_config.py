"""The Predictor and the demo follow the config: test-time size, the model's channel order, class
names of the training dataset, one documented threshold; PIL and BGR (``cv2.imread``) inputs."""

from __future__ import annotations

import re
import uuid

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from tiny_model import REPO, TINY_CONFIG, save_tiny_checkpoint

from mrdetr.config import LazyConfig
from mrdetr.data import DatasetCatalog, MetadataCatalog
from mrdetr.engine.predictor import DEFAULT_SCORE_THRESHOLD, Detections, Predictor
from mrdetr.tools.demo import build_parser

NAMES = ["cat", "dog", "bird", "fish", "frog"]  # the tiny model has 5 classes


@pytest.fixture(scope="module")
def dataset():
    name = f"predictor_cfg_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(thing_classes=NAMES)
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _cfg(dataset: str, img_format: str = "RGB"):
    cfg = LazyConfig.load(str(TINY_CONFIG))
    test = {"mapper": {"img_format": img_format, "augmentation": {"min_size": 48, "max_size": 72}}}
    cfg.dataloader = OmegaConf.create({"train": {"dataset": dataset}, "test": test})
    return cfg


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pth", seed=4)


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _same(a: Detections, b: Detections) -> None:
    assert torch.equal(a.classes, b.classes) and torch.equal(a.scores, b.scores)
    assert torch.equal(a.boxes, b.boxes)


def test_sizes_names_and_threshold_come_from_the_config(dataset, weights):
    p = Predictor(_cfg(dataset), weights=weights, device="cpu")
    assert (p.min_size_test, p.max_size_test) == (48, 72)
    assert p.preprocess(_image(60, 120, 0))["image"].shape[-2:] == (36, 72)  # capped at 72
    assert p.preprocess(_image(100, 120, 0))["image"].shape[-2:] == (48, 58)
    assert p.class_names == NAMES and p.threshold == DEFAULT_SCORE_THRESHOLD
    dets = p(_image(60, 80, 1), threshold=0.0)
    assert len(dets) > 0 and dets.class_names == [NAMES[c] for c in dets.classes.tolist()]
    assert (p(_image(60, 80, 1)).scores > DEFAULT_SCORE_THRESHOLD).all()
    explicit = Predictor(_cfg(dataset), weights=weights, device="cpu", min_size_test=32)
    assert (explicit.min_size_test, explicit.max_size_test) == (32, 72)


def test_threshold_default_is_the_documented_one_and_the_demos():
    assert build_parser().parse_args(["--config-file", "x"]).confidence_threshold == (
        DEFAULT_SCORE_THRESHOLD
    )
    doc = (REPO / "docs" / "use_a_trained_model.md").read_text()
    row = re.search(r"\| `threshold` \| `([0-9.]+)`", doc)
    assert row is not None and float(row.group(1)) == DEFAULT_SCORE_THRESHOLD
    assert f"--confidence-threshold` (default {DEFAULT_SCORE_THRESHOLD}" in doc


def test_pil_rgb_and_bgr_inputs_agree_and_the_model_gets_its_own_channel_order(dataset, weights):
    p = Predictor(_cfg(dataset), weights=weights, device="cpu", threshold=0.0)
    rgb = _image(50, 70, 2)
    ref = p(rgb)
    _same(p(Image.fromarray(rgb)), ref)
    _same(p(np.ascontiguousarray(rgb[:, :, ::-1]), format="BGR"), ref)
    with pytest.raises(ValueError, match="format must be one of"):
        p(rgb, format="RGBA")
    bgr_model = Predictor(_cfg(dataset, "BGR"), weights=weights, device="cpu", threshold=0.0)
    fed = bgr_model.preprocess(rgb)["image"]
    assert torch.equal(fed, p.preprocess(rgb)["image"].flip(0))


def test_demo_handles_cv2_imread_frames_like_a_file(dataset, weights, tmp_path):
    from mrdetr.tools.demo import _Demo

    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), _image(60, 90, 3))
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text(
        "from mrdetr.config import LazyConfig\n"
        "from omegaconf import OmegaConf\n"
        f"_cfg = LazyConfig.load({str(TINY_CONFIG)!r})\n"
        "model, train = _cfg.model, _cfg.train\n"
        f"dataloader = OmegaConf.create({{'train': {{'dataset': {dataset!r}}}, 'test': "
        "{'mapper': {'img_format': 'RGB', 'augmentation': {'min_size': 48, 'max_size': 72}}}})\n"
    )
    args = build_parser().parse_args(
        ["--config-file", str(cfg_file), "--input", str(path), "--confidence-threshold", "0"]
        + ["--opts", f"train.init_checkpoint={weights}"]
    )
    demo = _Demo(args)
    assert demo.predictor.class_names == NAMES and demo.predictor.min_size_test == 48
    _, count = demo.draw(cv2.imread(str(path)))
    from_file = Predictor(_cfg(dataset), weights=weights, device="cpu", threshold=0.0)(str(path))
    assert count == len(from_file) > 0
    _same(demo.predictor(cv2.imread(str(path))), from_file)


def test_to_supervision(dataset, weights):
    sv = pytest.importorskip("supervision")
    p = Predictor(_cfg(dataset), weights=weights, device="cpu", threshold=0.0)
    dets = p(_image(40, 60, 5))
    converted = dets.to_supervision()
    assert isinstance(converted, sv.Detections) and len(converted) == len(dets)
    np.testing.assert_array_equal(converted.xyxy, dets.boxes.numpy())
    np.testing.assert_array_equal(converted.confidence, dets.scores.numpy())
    np.testing.assert_array_equal(converted.class_id, dets.classes.numpy())
    assert list(converted.data["class_name"]) == dets.class_names
