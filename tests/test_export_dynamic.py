"""Dynamic-shape ONNX export of the tiny model: one file, run by onnxruntime at several image sizes
and batch sizes, equals PyTorch; with post-processing in the graph it equals the model's detections.

Tolerance: 1e-3 absolute on logits, normalised boxes, scores and pixel boxes (the observed
differences are ~2e-5: grid_sample and the matmuls round differently in onnxruntime).
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from tiny_model import tiny_model

from mrdetr.export.onnx import export_onnx

ort = pytest.importorskip("onnxruntime", reason="pip install 'mrdetr[export]' (onnxruntime)")
onnx = pytest.importorskip("onnx", reason="pip install 'mrdetr[export]' (onnx)")

ATOL = 1e-3
EXPORT_SHAPE = (1, 64, 96)  # batch, height, width of the export
# (batch, height, width): the export size, landscape / portrait / not a multiple of the strides
# (odd feature maps at every level, a 1-wide coarsest level), at batch 1 and 2
RUN_SHAPES = [(1, 64, 96), (2, 64, 96), (1, 80, 64), (2, 96, 128), (1, 72, 100), (2, 130, 75)]


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3).eval()


def _export(model, path, postprocess: bool, shape=EXPORT_SHAPE) -> str:
    b, h, w = shape
    export_onnx(
        model, str(path), height=h, width=w, batch_size=b, dynamic=True,
        postprocess=postprocess, verify=False,
    )  # fmt: skip
    return str(path)


def _images(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255.0


@pytest.fixture(scope="module")
def raw_session(model, tmp_path_factory):
    path = _export(model, tmp_path_factory.mktemp("onnx") / "dynamic.onnx", postprocess=False)
    return path, ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def test_dynamic_graph_matches_pytorch_at_every_size_and_batch(model, raw_session):
    _, session = raw_session
    for i, (b, h, w) in enumerate(RUN_SHAPES):
        images = _images(b, h, w, seed=i)
        logits, boxes = session.run(["pred_logits", "pred_boxes"], {"image": images.numpy()})
        raw = model.forward_raw([{"image": im} for im in images])
        assert logits.shape == (b, 30, 5) and boxes.shape == (b, 30, 4)
        np.testing.assert_allclose(logits, raw.pred_logits.numpy(), atol=ATOL, rtol=0)
        np.testing.assert_allclose(boxes, raw.pred_boxes.numpy(), atol=ATOL, rtol=0)


def _integer_constants(path: str) -> collections.Counter:
    """Small integer constants of a graph (where a baked size would show) and its op counts."""
    graph = onnx.load(path).graph
    tensors = [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute]
    tensors += list(graph.initializer)
    found = collections.Counter(n.op_type for n in graph.node)
    for t in tensors:
        value = onnx.numpy_helper.to_array(t)
        if value.dtype.kind in "iu" and value.size <= 8:
            found[(str(value.dtype), tuple(value.ravel().tolist()))] += 1
    return found


def test_no_size_is_baked_into_the_graph(model, raw_session, tmp_path):
    other = _export(model, tmp_path / "other.onnx", postprocess=False, shape=(2, 96, 128))
    assert _integer_constants(raw_session[0]) == _integer_constants(other)


def test_postprocess_in_graph_equals_the_models_detections(model, tmp_path):
    path = _export(model, tmp_path / "post.onnx", postprocess=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    k = model.select_box_nums_for_evaluation
    for i, (b, h, w) in enumerate([(1, 64, 96), (2, 80, 64), (2, 130, 75)]):
        images = _images(b, h, w, seed=10 + i)
        scores, labels, boxes = session.run(
            ["scores", "labels", "boxes"], {"image": images.numpy()}
        )
        assert scores.shape == (b, k) and labels.shape == (b, k) and boxes.shape == (b, k, 4)
        assert labels.dtype == np.int64
        with torch.no_grad():
            outputs = model([{"image": im} for im in images])
        for j, out in enumerate(outputs):
            inst = out["instances"]
            assert inst.image_size == (h, w)
            # the model drops boxes left empty by clipping; the graph keeps all K rows
            keep = (boxes[j, :, 2] > boxes[j, :, 0]) & (boxes[j, :, 3] > boxes[j, :, 1])
            np.testing.assert_array_equal(labels[j][keep], inst.pred_classes.numpy())
            np.testing.assert_allclose(scores[j][keep], inst.scores.numpy(), atol=ATOL, rtol=0)
            np.testing.assert_allclose(
                boxes[j][keep], inst.pred_boxes.tensor.numpy(), atol=ATOL, rtol=0
            )
            assert (boxes[j] >= 0).all() and (boxes[j][:, 0::2] <= w).all()
            assert (boxes[j][:, 1::2] <= h).all()


def test_size_divisibility_and_exact_masks_are_reproduced_in_the_graph(tmp_path):
    """A model that pads to a multiple of 64 (the quick start's settings): the graph pads in the
    graph and builds the ``exact`` level masks from the symbolic size, so it equals the model."""
    model = tiny_model(["model.size_divisibility=64", "model.padding_mask_mode=exact"], seed=3)
    path = _export(model.eval(), tmp_path / "padded.onnx", postprocess=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for i, (b, h, w) in enumerate([(1, 64, 96), (2, 80, 64), (2, 130, 75), (1, 128, 128)]):
        images = _images(b, h, w, seed=20 + i)
        logits, boxes = session.run(["pred_logits", "pred_boxes"], {"image": images.numpy()})
        raw = model.forward_raw([{"image": im} for im in images])
        np.testing.assert_allclose(logits, raw.pred_logits.numpy(), atol=ATOL, rtol=0)
        np.testing.assert_allclose(boxes, raw.pred_boxes.numpy(), atol=ATOL, rtol=0)
