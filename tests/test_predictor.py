"""Predictor API on the tiny model: input kinds, batching, original-image boxes, weights, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from tiny_model import REPO, tiny_cfg

from mrdetr.config import LazyConfig, instantiate
from mrdetr.data import MetadataCatalog
from mrdetr.engine.predictor import Detections, Predictor

TINY_CONFIG = REPO / "tests" / "configs" / "tiny_model.py"
# random weights score low: keep every query (the default threshold is DEFAULT_SCORE_THRESHOLD)
SIZES = dict(min_size_test=64, max_size_test=128, threshold=0.0)


def _image(h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(3)
    model = instantiate(LazyConfig.load(str(TINY_CONFIG)).model)
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    torch.save({"model": model.state_dict()}, path)
    return path, model


@pytest.fixture(scope="module")
def predictor(weights):
    return Predictor(str(TINY_CONFIG), weights=weights[0], device="cpu", batch_size=2, **SIZES)


def _assert_same(a: Detections, b: Detections, atol: float = 0.0) -> None:
    assert a.image_size == b.image_size
    assert torch.equal(a.classes, b.classes)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=atol)
    torch.testing.assert_close(a.boxes, b.boxes, rtol=0, atol=atol)


def test_tiny_config_file_matches_tiny_overrides():
    assert OmegaConf.to_container(
        LazyConfig.load(str(TINY_CONFIG)).model
    ) == OmegaConf.to_container(tiny_cfg().model)


def test_path_numpy_and_tensor_inputs_agree(predictor, tmp_path):
    image = _image(50, 70, seed=0)
    hwc = image.permute(1, 2, 0).numpy()
    path = tmp_path / "img.png"
    Image.fromarray(hwc).save(path)
    ref = predictor(image)
    assert isinstance(ref, Detections) and len(ref) > 0
    _assert_same(predictor(str(path)), ref)
    _assert_same(predictor(hwc.copy()), ref)
    # a float tensor is resized without uint8 rounding: same detections up to near-tied scores
    as_float = predictor(image.float())
    torch.testing.assert_close(as_float.scores, ref.scores, rtol=0, atol=2e-2)
    bgr = Predictor(str(TINY_CONFIG), weights=None, device="cpu", input_format="BGR", **SIZES)
    bgr.model.load_state_dict(predictor.model.state_dict())
    _assert_same(bgr(np.ascontiguousarray(hwc[:, :, ::-1])), ref)


def test_list_of_mixed_sizes_equals_single_calls(predictor):
    images = [_image(50, 70, 1), _image(80, 40, 2), _image(50, 70, 3), _image(50, 70, 4)]
    batched = predictor(images)
    assert isinstance(batched, list) and len(batched) == len(images)
    for image, dets in zip(images, batched):
        _assert_same(predictor(image), dets, atol=1e-5)


def test_boxes_are_in_the_original_image_and_threshold_filters(predictor, weights):
    image = _image(90, 150, seed=5)  # resized to 64x107: boxes must be scaled back
    dets = predictor(image)
    assert dets.image_size == (90, 150)
    assert (dets.boxes[:, 0::2] <= 150).all() and (dets.boxes[:, 1::2] <= 90).all()
    assert (dets.boxes >= 0).all()
    assert torch.all(dets.scores[:-1] >= dets.scores[1:])
    # the same numbers as the model run by hand on the resized image
    model = weights[1].eval()
    with torch.no_grad():
        ref = model([{"image": predictor.preprocess(image)["image"], "height": 90, "width": 150}])
    inst = ref[0]["instances"]
    torch.testing.assert_close(dets.scores, inst.scores.sort(descending=True).values)
    assert predictor.preprocess(image)["image"].shape[-2:] == (64, 107)
    threshold = float(dets.scores[len(dets) // 2])
    kept = predictor(image, threshold=threshold)
    assert len(kept) == int((dets.scores > threshold).sum()) and (kept.scores > threshold).all()


def test_class_names_from_metadata(weights):
    names = ["circle", "square", "star", "moon", "heart"]
    MetadataCatalog.get("predictor_test_names").set(thing_classes=names)
    p = Predictor(str(TINY_CONFIG), weights=weights[0], device="cpu",
                  metadata_dataset="predictor_test_names", **SIZES)  # fmt: skip
    dets = p(_image(40, 40, 6))
    assert dets.class_names == [names[c] for c in dets.classes.tolist()]


def test_bad_inputs_raise_clear_errors(predictor, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        Predictor(str(TINY_CONFIG), weights=tmp_path / "missing.pth", device="cpu")
    with pytest.raises(FileNotFoundError, match="config file not found"):
        Predictor(str(tmp_path / "nope.py"))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        predictor(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(TypeError, match="image 1"):
        predictor([_image(30, 30, 0), 42])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(OSError, match="bad.jpg"):
        predictor(str(bad))
