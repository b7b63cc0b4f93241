"""ONNX export of the primary (inference) route of Mr. DETR, checked with onnxruntime.

The exported graph takes one raw RGB image ``[1, 3, H, W]`` (float, 0..255, already resized) and
returns ``pred_logits [1, Q, C]`` (after the eval-time score fusion) and ``pred_boxes [1, Q, 4]``
(normalised cxcywh) -- exactly ``MrDETR.forward_raw``. Post-processing (top-K, rescaling) stays
outside the graph. The classic TorchScript exporter is used (``dynamo=False``); under
``torch.onnx.is_in_onnx_export()`` deformable attention takes its portable ``grid_sample`` path.
Level sizes become constants while tracing, so a graph is valid for the (H, W) it was exported at.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mrdetr.utils.file_io import atomic_path

__all__ = ["ExportReport", "PrimaryRouteExport", "export_onnx", "verify_onnx"]

DEFAULT_OPSET = 17  # GridSample needs opset >= 16
DEFAULT_TOLERANCE = 1e-3
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["pred_logits", "pred_boxes"]


class PrimaryRouteExport(nn.Module):
    """Wraps a ``MrDETR`` so that ``forward(image) -> (pred_logits, pred_boxes)``.

    Args:
        model: a ``MrDETR`` in eval mode.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Args: image [1, 3, H, W] raw RGB (0..255). Returns: logits [1, Q, C], boxes [1, Q, 4]."""
        raw = self.model.forward_raw([{"image": image[0]}])
        return raw.pred_logits, raw.pred_boxes


@dataclass
class ExportReport:
    """What :func:`export_onnx` produced.

    Attributes:
        path: the ``.onnx`` file.
        input_shape: (1, 3, H, W) used for the export.
        max_abs_diff: largest |onnxruntime - torch| over both outputs (None if not verified).
    """

    path: str
    input_shape: tuple[int, ...]
    max_abs_diff: float | None


def verify_onnx(
    path: str, wrapper: nn.Module, image: Tensor, tolerance: float = DEFAULT_TOLERANCE
) -> float:
    """Run ``path`` with onnxruntime on ``image`` and compare to ``wrapper(image)``.

    Returns:
        the largest absolute difference.

    Raises:
        ImportError: onnxruntime is not installed.
        ValueError: a difference exceeds ``tolerance``.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(OUTPUT_NAMES, {INPUT_NAMES[0]: image.cpu().numpy().astype(np.float32)})
    with torch.no_grad():
        expected = [t.cpu().numpy() for t in wrapper(image)]
    diff = max(float(np.abs(g - e).max()) if g.size else 0.0 for g, e in zip(got, expected))
    if diff > tolerance:
        raise ValueError(
            f"onnxruntime output of {path} differs from PyTorch by {diff:.3g} > {tolerance}"
        )
    return diff


def export_onnx(
    model: nn.Module,
    output: str,
    *,
    height: int,
    width: int,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = False,
    verify: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
) -> ExportReport:
    """Export the primary route of ``model`` for [1, 3, height, width] inputs.

    Args:
        model: a ``MrDETR`` (moved to CPU and eval mode for the export).
        output: the ``.onnx`` path; must not exist. Written atomically.
        height: input height (already resized, e.g. 800).
        width: input width.
        opset: ONNX opset.
        dynamic: mark H and W as dynamic axes. Experimental: level sizes are traced as constants,
            so the graph is only verified (and only known to be right) at the export size.
        verify: check the file with onnxruntime on a random image.
        tolerance: largest allowed absolute difference.
        seed: seed of the random verification image.

    Raises:
        FileExistsError: ``output`` exists.
        ValueError: bad size, or onnxruntime disagrees with PyTorch.
    """
    if os.path.exists(output):
        raise FileExistsError(f"output file already exists: {output} (refusing to overwrite)")
    if height <= 0 or width <= 0:
        raise ValueError(f"--height/--width must be positive, got {height}x{width}")
    wrapper = PrimaryRouteExport(model.cpu().eval()).eval()
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, height, width, generator=g) * 255.0
    axes = {"image": {2: "height", 3: "width"}} if dynamic else None
    with atomic_path(output) as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            # shape checks become constants while tracing: expected for a fixed-size export
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper,
                (image,),
                tmp,
                input_names=INPUT_NAMES,
                output_names=OUTPUT_NAMES,
                opset_version=opset,
                dynamic_axes=axes,
                dynamo=False,
            )
        diff = verify_onnx(tmp, wrapper, image, tolerance) if verify else None
    return ExportReport(output, tuple(image.shape), diff)
