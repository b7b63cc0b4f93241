"""ONNX export of the primary (inference) route of Mr. DETR, checked with onnxruntime.

The exported graph takes a batch of raw images ``image [B, 3, H, W]`` (float, 0..255, already
resized, in the model's channel order, no padding; a model with ``size_divisibility`` pads them
in the graph as its preprocessing does) and returns either

- ``pred_logits [B, Q, C]`` (after the eval-time score fusion) and ``pred_boxes [B, Q, 4]``
  (normalised cxcywh) -- exactly ``MrDETR.forward_raw``; or, with ``postprocess=True``,
- ``scores [B, K]`` (sorted high to low), ``labels [B, K]`` (int64) and ``boxes [B, K, 4]`` (x1y1x2y2
  in pixels of the input image, clipped to it), K = ``model.select_box_nums_for_evaluation`` -- the
  top-K of ``MrDETR.postprocess`` for an input of that size (which also drops the zero-area boxes
  that clipping can leave; the graph keeps all K rows).

The classic TorchScript exporter is used (``dynamo=False``); under ``torch.onnx.is_in_onnx_export()``
deformable attention takes its portable ``grid_sample`` path. With ``dynamic=True`` the batch size,
height and width are free: level sizes, level start indices, position embeddings, reference points
and two-stage anchors are computed in the graph from the feature maps (:mod:`mrdetr.utils.tracing`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mrdetr.modeling.postprocessing import topk_queries
from mrdetr.modeling.routes import Route
from mrdetr.structures import ImageList, box_cxcywh_to_xyxy
from mrdetr.utils.file_io import atomic_path

__all__ = [
    "POSTPROCESS_OUTPUT_NAMES",
    "ExportReport",
    "PrimaryRouteExport",
    "export_onnx",
    "verify_onnx",
]

DEFAULT_OPSET = 17  # GridSample needs opset >= 16
DEFAULT_TOLERANCE = 1e-3
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["pred_logits", "pred_boxes"]
POSTPROCESS_OUTPUT_NAMES = ["scores", "labels", "boxes"]
# a dynamic export is also verified at this (height, width) offset from the export size, at batch 2
_SECOND_SIZE_OFFSET = (-8, 24)
_SECOND_BATCH = 2


class PrimaryRouteExport(nn.Module):
    """Wraps a ``MrDETR`` so that ``forward(image)`` is the graph described in the module docstring.

    Args:
        model: a ``MrDETR`` in eval mode.
        postprocess: return the top-K ``(scores, labels, boxes)`` in input pixels instead of
            ``(pred_logits, pred_boxes)``.
    """

    def __init__(self, model: nn.Module, postprocess: bool = False):
        super().__init__()
        self.model = model
        self.postprocess = postprocess

    @property
    def output_names(self) -> list[str]:
        return POSTPROCESS_OUTPUT_NAMES if self.postprocess else OUTPUT_NAMES

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        """Args: image [B, 3, H, W] raw (0..255), unpadded. Returns: see the module docstring."""
        model = self.model
        x = (image.to(torch.float32) - model.pixel_mean) / model.pixel_std
        size = tuple(x.shape[-2:])  # symbolic while exporting; every image has this size
        x, mask = _pad_like_preprocess(x, model.size_divisibility, model.eval_padding_mask)
        encoded = model.encode(ImageList(x, [size]), mask)
        raw = model.raw_output(model.decode_routes(encoded, [size], (Route.PRIMARY,)))
        if not self.postprocess:
            return raw.pred_logits, raw.pred_boxes
        k = model.select_box_nums_for_evaluation
        scores, labels, _, boxes = topk_queries(raw.pred_logits, raw.pred_boxes, k)
        h, w = size
        scale = torch.stack([torch.as_tensor(v) for v in (w, h, w, h)]).to(boxes.dtype)
        xyxy = box_cxcywh_to_xyxy(boxes) * scale
        return scores, labels, torch.minimum(xyxy.clamp(min=0), scale)


def _pad_like_preprocess(
    x: Tensor, size_divisibility: int, padding_mask: bool
) -> tuple[Tensor, Tensor | None]:
    """Pad a normalised batch [B, 3, H, W] of one size as ``MrDETR.preprocess`` pads each image.

    Without ``size_divisibility`` the batch stays as it is and the mask is None (nothing is
    padding). Otherwise H and W are rounded up to its multiple in the graph (zero padding,
    bottom/right) and the [B, H', W'] mask is True on the padding (all False when the model
    ignores the mask at eval, ``padding_mask`` False).
    """
    if size_divisibility <= 1:
        return x, None
    h, w = x.shape[-2:]
    pad_h = (h + size_divisibility - 1) // size_divisibility * size_divisibility
    pad_w = (w + size_divisibility - 1) // size_divisibility * size_divisibility
    x = nn.functional.pad(x, (0, pad_w - w, 0, pad_h - h))
    rows = torch.arange(pad_h, device=x.device)[:, None] >= h
    cols = torch.arange(pad_w, device=x.device)[None, :] >= w
    mask = (rows | cols).unsqueeze(0).expand(x.shape[0], -1, -1)
    return x, mask if padding_mask else torch.zeros_like(mask)


@dataclass
class ExportReport:
    """What :func:`export_onnx` produced.

    Attributes:
        path: the ``.onnx`` file.
        input_shape: (B, 3, H, W) used for the export.
        max_abs_diff: largest |onnxruntime - torch| over the outputs and every checked input shape
            (None if not verified).
        checked_shapes: the input shapes onnxruntime was compared with PyTorch at.
    """

    path: str
    input_shape: tuple[int, ...]
    max_abs_diff: float | None
    checked_shapes: list[tuple[int, ...]]


def verify_onnx(
    path: str, wrapper: PrimaryRouteExport, image: Tensor, tolerance: float = DEFAULT_TOLERANCE
) -> float:
    """Run ``path`` with onnxruntime on ``image`` and compare every output to ``wrapper(image)``.

    Returns:
        the largest absolute difference.

    Raises:
        ImportError: onnxruntime is not installed.
        ValueError: a difference exceeds ``tolerance``.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = wrapper.output_names
    got = session.run(names, {INPUT_NAMES[0]: image.cpu().numpy().astype(np.float32)})
    with torch.no_grad():
        expected = [t.cpu().numpy() for t in wrapper(image)]
    diff = 0.0
    for name, g, e in zip(names, got, expected):
        if g.shape != e.shape:
            raise ValueError(
                f"onnxruntime output '{name}' of {path} has shape {g.shape}, PyTorch {e.shape} "
                f"(input {tuple(image.shape)})"
            )
        if g.size:
            diff = max(diff, float(np.abs(g.astype(np.float64) - e.astype(np.float64)).max()))
    if diff > tolerance:
        raise ValueError(
            f"onnxruntime output of {path} differs from PyTorch by {diff:.3g} > {tolerance} "
            f"(input {tuple(image.shape)})"
        )
    return diff


def export_onnx(
    model: nn.Module,
    output: str,
    *,
    height: int,
    width: int,
    batch_size: int = 1,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = False,
    postprocess: bool = False,
    verify: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
) -> ExportReport:
    """Export the primary route of ``model`` for [batch_size, 3, height, width] inputs.

    Args:
        model: a ``MrDETR`` (moved to CPU and eval mode for the export).
        output: the ``.onnx`` path; must not exist. Written atomically.
        height: input height of the export (already resized, e.g. 800).
        width: input width.
        batch_size: batch of the export.
        opset: ONNX opset.
        dynamic: batch, height and width are dynamic axes of the graph (verified at the export
            shape and at a second size with batch 2).
        postprocess: put the top-K post-processing in the graph (outputs ``scores, labels, boxes``).
        verify: check the file with onnxruntime on random images.
        tolerance: largest allowed absolute difference.
        seed: seed of the random verification images.

    Raises:
        FileExistsError: ``output`` exists.
        ValueError: bad size, or onnxruntime disagrees with PyTorch.
    """
    if os.path.exists(output):
        raise FileExistsError(f"output file already exists: {output} (refusing to overwrite)")
    if height <= 0 or width <= 0 or batch_size <= 0:
        raise ValueError(
            f"--height/--width/--batch-size must be positive, got {height}x{width}, {batch_size}"
        )
    wrapper = PrimaryRouteExport(model.cpu().eval(), postprocess).eval()
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch_size, 3, height, width, generator=g) * 255.0
    checks = [image]
    axes = None
    if dynamic:
        dh, dw = _SECOND_SIZE_OFFSET
        size = (_SECOND_BATCH, 3, max(1, height + dh), max(1, width + dw))
        checks.append(torch.rand(*size, generator=g) * 255.0)
        axes = {INPUT_NAMES[0]: {0: "batch", 2: "height", 3: "width"}}
        axes.update({name: {0: "batch"} for name in wrapper.output_names})
    with atomic_path(output) as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            # value checks on sizes (e.g. enough encoder tokens) become constants while tracing
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper,
                (image,),
                tmp,
                input_names=INPUT_NAMES,
                output_names=wrapper.output_names,
                opset_version=opset,
                dynamic_axes=axes,
                dynamo=False,
            )
        diff = None
        if verify:
            diff = max(verify_onnx(tmp, wrapper, im, tolerance) for im in checks)
    shapes = [tuple(im.shape) for im in checks] if verify else []
    return ExportReport(output, tuple(image.shape), diff, shapes)
