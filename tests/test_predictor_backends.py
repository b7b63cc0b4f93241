"""``Predictor(backend="onnxruntime" | "openvino")`` on the tiny model returns the detections of the
PyTorch predictor for every input kind (path, numpy RGB/BGR, PIL, uint8/float tensors, lists of
mixed sizes).

Tolerance: scores and boxes (pixels of the original image) within 1e-3 absolute, classes equal; the
observed differences are <= 1e-7 on scores and <= 3e-5 px on boxes. OpenVINO runs with
``INFERENCE_PRECISION_HINT=f32`` (its default on this CPU is bf16, whose scores moved by ~3e-3).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_model import TINY_CONFIG, save_tiny_checkpoint, tiny_model

from mrdetr.engine.predictor import Detections, Predictor
from mrdetr.export.onnx import export_onnx

ort = pytest.importorskip("onnxruntime", reason="pip install 'mrdetr[export]' (onnxruntime)")
pytest.importorskip("onnx", reason="pip install 'mrdetr[export]' (onnx)")

ATOL = 1e-3
# random weights score low: keep every query
SIZES = dict(min_size_test=64, max_size_test=128, threshold=0.0, batch_size=2)


def _image(h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("backends")
    weights = save_tiny_checkpoint(root / "model.pth", seed=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MRDETR_CACHE", str(root / "cache"))
        torch_p = Predictor(str(TINY_CONFIG), weights=weights, device="cpu", **SIZES)
        ort_p = Predictor(
            str(TINY_CONFIG), weights=weights, device="cpu", backend="onnxruntime", **SIZES
        )
    return root, weights, torch_p, ort_p


def _assert_same(got: Detections, ref: Detections) -> None:
    assert got.image_size == ref.image_size and len(got) == len(ref) > 0
    assert torch.equal(got.classes, ref.classes)
    torch.testing.assert_close(got.scores, ref.scores, rtol=0, atol=ATOL)
    torch.testing.assert_close(got.boxes, ref.boxes, rtol=0, atol=ATOL)


def _inputs(tmp_path) -> list[tuple[object, dict]]:
    image = _image(50, 70, seed=0)
    hwc = image.permute(1, 2, 0).numpy()
    path = tmp_path / "img.png"
    Image.fromarray(hwc).save(path)
    return [
        (str(path), {}),
        (hwc.copy(), {}),
        (np.ascontiguousarray(hwc[:, :, ::-1]), {"format": "BGR"}),
        (Image.fromarray(hwc), {}),
        (image, {}),
        (image.float(), {}),
        (_image(90, 150, seed=5), {}),  # resized to 64x107: boxes scaled back to 90x150
    ]


def _check_backend(ref: Predictor, other: Predictor, tmp_path) -> None:
    for image, kwargs in _inputs(tmp_path):
        _assert_same(other(image, **kwargs), ref(image, **kwargs))
    # a list of mixed sizes: same-size images run as one batch of 2 through the dynamic graph
    images = [_image(50, 70, 1), _image(80, 40, 2), _image(50, 70, 3)]
    for got, want in zip(other(images), ref(images)):
        _assert_same(got, want)


def test_onnxruntime_predictor_equals_pytorch(setup, tmp_path):
    root, weights, torch_p, ort_p = setup
    assert ort_p.backend == "onnxruntime" and ort_p.model.path.startswith(str(root / "cache"))
    _check_backend(torch_p, ort_p, tmp_path)
    # the cached export is reused: a second predictor exports nothing new
    before = sorted(os.listdir(root / "cache" / "onnx"))
    again = Predictor(
        str(TINY_CONFIG), weights=weights, device="cpu", backend="onnxruntime",
        onnx_path=ort_p.model.path, **SIZES,
    )  # fmt: skip
    _assert_same(again(_image(60, 60, 9)), torch_p(_image(60, 60, 9)))
    assert (
        sorted(os.listdir(root / "cache" / "onnx"))
        == before
        == [os.path.basename(again.model.path)]
    )


@pytest.mark.openvino
def test_openvino_predictor_equals_pytorch(setup, tmp_path):
    pytest.importorskip("openvino", reason="pip install 'mrdetr[openvino]'")
    _, weights, torch_p, ort_p = setup
    ov_p = Predictor(
        str(TINY_CONFIG), weights=weights, device="cpu", backend="openvino",
        onnx_path=ort_p.model.path, **SIZES,
    )  # fmt: skip
    assert ov_p.model.precision == "f32"
    _check_backend(torch_p, ov_p, tmp_path)


def test_backend_errors_are_one_clear_line(setup, tmp_path, monkeypatch):
    _, weights, _, _ = setup
    with pytest.raises(ValueError, match="backend must be one of"):
        Predictor(str(TINY_CONFIG), weights=weights, device="cpu", backend="tensorrt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        Predictor(str(TINY_CONFIG), device="cpu", backend="onnxruntime",
                  onnx_path=tmp_path / "missing.onnx")  # fmt: skip
    # a graph without post-processing is refused, naming the export flag
    raw = tmp_path / "raw.onnx"
    export_onnx(tiny_model(), str(raw), height=64, width=64, verify=False)
    with pytest.raises(ValueError, match="--postprocess"):
        Predictor(str(TINY_CONFIG), device="cpu", backend="onnxruntime", onnx_path=raw)
    # a missing package names the extra to install (None in sys.modules: the import fails)
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ImportError, match=r"pip install 'mrdetr\[openvino\]'"):
        Predictor(str(TINY_CONFIG), device="cpu", backend="openvino", onnx_path=raw)


def test_cache_name_follows_weights_and_settings():
    from mrdetr.export.runtime import _model_key

    key = _model_key(tiny_model(seed=3).eval(), 17)
    assert _model_key(tiny_model(seed=3).eval(), 17) == key  # same weights and settings
    assert _model_key(tiny_model(seed=4).eval(), 17) != key  # other weights
    assert _model_key(tiny_model(seed=3).eval(), 18) != key  # other opset
    fewer = tiny_model(seed=3).eval()
    fewer.select_box_nums_for_evaluation = 10  # K of the graph: a plain attribute
    assert _model_key(fewer, 17) != key
