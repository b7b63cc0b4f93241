"""Backend selection for multi-scale deformable attention.

Backends (all take and return the same tensors, see :func:`multi_scale_deformable_attention`):

- ``"reference"``: per-level ``grid_sample`` (:mod:`.reference`), portable, the numerical ground truth;
- ``"cpu"``: one gather for all levels (:mod:`.gather`), pure PyTorch ops, the fast path on the CPU
  (it runs on any device);
- ``"triton"``: fused Triton kernels (:mod:`.triton_kernels`), CUDA tensors (or any tensors under
  ``TRITON_INTERPRET=1``);
- ``"auto"``: Triton for CUDA tensors when it can run them and its first-use self-check passes
  (:mod:`.selfcheck`: forward and gradients against the reference on a small random problem, once
  per device and dtypes), else the gather path; a Triton backend that cannot run or fails its
  self-check is reported once in the log, with the reason. While tracing (``torch.jit.trace``) or exporting to
  ONNX, every choice becomes ``"reference"``, the only path built from exportable ops.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from ...utils.tracing import is_exporting
from .checks import check_msda_inputs
from .gather import msda_gather
from .reference import msda_reference
from .selfcheck import triton_self_check
from .triton_kernels import msda_triton, triton_unavailable_reason

__all__ = ["MSDA_BACKENDS", "multi_scale_deformable_attention", "resolve_msda_backend"]

MSDA_BACKENDS = ("auto", "reference", "cpu", "triton")

logger = logging.getLogger(__name__)
# Device types on which "auto" prefers the Triton kernels (elsewhere the gather path is faster).
AUTO_TRITON_DEVICE_TYPES = ("cuda",)
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def _triton_failure(
    value: Tensor, sampling_locations: Tensor, attention_weights: Tensor
) -> str | None:
    """Why Triton must not run these inputs (unavailable, or its self-check failed), or None."""
    reason = triton_unavailable_reason(value, sampling_locations, attention_weights)
    if reason is None:
        reason = triton_self_check(value, sampling_locations, attention_weights)
        if reason is not None:
            reason = f"self-check against the reference failed: {reason}"
    return reason


def resolve_msda_backend(
    backend: str, value: Tensor, sampling_locations: Tensor, attention_weights: Tensor
) -> str:
    """The concrete backend (``"reference"``, ``"cpu"`` or ``"triton"``) that a call will use.

    Args:
        backend: one of :data:`MSDA_BACKENDS`.
        value, sampling_locations, attention_weights: the op inputs (device and dtype decide).

    Raises:
        ValueError: unknown backend name.
        RuntimeError: ``"triton"`` asked for explicitly but unable to run these inputs, or failing
            its self-check on this device and dtypes (the message says why).
    """
    if backend not in MSDA_BACKENDS:
        raise ValueError(
            f"multi_scale_deformable_attention: backend must be one of {MSDA_BACKENDS}, got {backend!r}"
        )
    if is_exporting():
        return "reference"
    if backend == "triton":
        reason = _triton_failure(value, sampling_locations, attention_weights)
        if reason is not None:
            raise RuntimeError(
                f"multi_scale_deformable_attention: backend='triton' cannot run: {reason}"
            )
        return "triton"
    if backend == "auto":
        if value.device.type not in AUTO_TRITON_DEVICE_TYPES:
            return "cpu"
        reason = _triton_failure(value, sampling_locations, attention_weights)
        if reason is None:
            return "triton"
        _warn_once(
            f"multi_scale_deformable_attention: Triton backend not used on {value.device} "
            f"({reason}); using the gather backend"
        )
        return "cpu"
    return backend


def multi_scale_deformable_attention(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    backend: str = "auto",
) -> Tensor:
    """Multi-scale deformable attention: attention-weighted bilinear samples of every level.

    Bilinear sampling uses zero padding and ``align_corners=False`` (location 0 and 1 are the outer
    edges of a map). Inputs of different float dtypes are computed in their promoted dtype
    (Triton: in float32 registers); the output always has ``value.dtype``.

    Args:
        value: [B, S, M, D] values of all levels, flattened level by level (row-major per level).
        spatial_shapes: [L, 2] int64 (h, w) per level; ``sum(h * w) == S``.
        level_start_index: [L] int64 first token of every level in S.
        sampling_locations: [B, Q, M, L, P, 2] normalised (x, y) sampling points.
        attention_weights: [B, Q, M, L, P] weight of each point.
        backend: ``"auto"``, ``"reference"``, ``"cpu"`` or ``"triton"`` (see the module docstring).

    Returns:
        [B, Q, M*D] sampled features, channels ordered head by head.

    Raises:
        ValueError: inconsistent shapes/dtypes/level sizes, or an unknown backend.
        RuntimeError: an explicitly requested backend cannot run on these inputs.
    """
    if not is_exporting():
        # Shapes and dtypes first (cheap, no host copy): a bad input is named before any backend logic.
        check_msda_inputs(
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            check_values=False,
        )
    name = resolve_msda_backend(backend, value, sampling_locations, attention_weights)
    if name == "triton":
        return msda_triton(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    if name == "cpu":
        return msda_gather(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    dtype = torch.promote_types(dtype, attention_weights.dtype)
    out = msda_reference(
        value.to(dtype),
        spatial_shapes,
        level_start_index,
        sampling_locations.to(dtype),
        attention_weights.to(dtype),
    )
    return out.to(value.dtype)
