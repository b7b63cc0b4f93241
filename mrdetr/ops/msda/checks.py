"""Input validation shared by every multi-scale deformable attention backend.

Shapes used throughout ``mrdetr.ops.msda``:

- B batch, S value tokens (all levels flattened, level by level, row-major), M heads, D channels per head,
- Q queries, L levels, P sampling points per level and head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MSDAShapes", "check_msda_inputs", "empty_msda_output"]


@dataclass(frozen=True)
class MSDAShapes:
    """The sizes of one call, read from validated inputs.

    Attributes:
        batch, tokens, heads, head_dim, queries, levels, points: B, S, M, D, Q, L, P.
        level_sizes: ``[(h_l, w_l)]`` as Python ints, or None when the values were not read.
    """

    batch: int
    tokens: int
    heads: int
    head_dim: int
    queries: int
    levels: int
    points: int
    level_sizes: list[tuple[int, int]] | None


def _fail(name: str, tensor: object, expected: str) -> None:
    got = f"shape {tuple(tensor.shape)}" if isinstance(tensor, Tensor) else f"type {type(tensor)}"
    raise ValueError(f"multi_scale_deformable_attention: `{name}` must be {expected}, got {got}")


def check_msda_inputs(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    *,
    check_values: bool = True,
) -> MSDAShapes:
    """Validate the five inputs of the op and return their sizes.

    Args:
        value: [B, S, M, D] floating point.
        spatial_shapes: [L, 2] integer (h, w) per level.
        level_start_index: [L] integer, offset of each level in S.
        sampling_locations: [B, Q, M, L, P, 2] floating point (x, y) in [0, 1].
        attention_weights: [B, Q, M, L, P] floating point.
        check_values: also read ``spatial_shapes``/``level_start_index`` (one small host copy) and check
            that ``sum(h * w) == S`` and that the level starts are the exclusive cumulative sum of
            ``h * w``. Turned off while tracing so the shapes are not baked in a second time.

    Raises:
        ValueError: naming the offending argument, its shape and what was expected.
    """
    if not isinstance(value, Tensor) or value.dim() != 4 or not value.is_floating_point():
        _fail("value", value, "a floating point [B, S, M, D] tensor")
    b, s, m, d = value.shape
    if (
        not isinstance(spatial_shapes, Tensor)
        or spatial_shapes.dim() != 2
        or spatial_shapes.shape[1] != 2
    ):
        _fail("spatial_shapes", spatial_shapes, "an integer [L, 2] tensor of (h, w)")
    if spatial_shapes.is_floating_point() or spatial_shapes.is_complex():
        raise ValueError(
            f"multi_scale_deformable_attention: `spatial_shapes` must have an integer dtype, "
            f"got {spatial_shapes.dtype}"
        )
    num_levels = spatial_shapes.shape[0]
    if (
        not isinstance(level_start_index, Tensor)
        or level_start_index.shape != (num_levels,)
        or level_start_index.is_floating_point()
    ):
        _fail("level_start_index", level_start_index, f"an integer [L] = [{num_levels}] tensor")
    if (
        not isinstance(sampling_locations, Tensor)
        or sampling_locations.dim() != 6
        or not sampling_locations.is_floating_point()
        or sampling_locations.shape[0] != b
        or sampling_locations.shape[2] != m
        or sampling_locations.shape[3] != num_levels
        or sampling_locations.shape[5] != 2
    ):
        _fail(
            "sampling_locations",
            sampling_locations,
            f"a floating point [B, Q, M, L, P, 2] tensor with B={b}, M={m}, L={num_levels}",
        )
    _, q, _, _, p, _ = sampling_locations.shape
    if (
        not isinstance(attention_weights, Tensor)
        or not attention_weights.is_floating_point()
        or attention_weights.shape != sampling_locations.shape[:-1]
    ):
        _fail(
            "attention_weights",
            attention_weights,
            f"a floating point [B, Q, M, L, P] = {list(sampling_locations.shape[:-1])} tensor",
        )
    level_sizes = None
    if check_values:
        sizes = spatial_shapes.detach().to("cpu", torch.int64)
        starts = level_start_index.detach().to("cpu", torch.int64)
        level_sizes = [(int(h), int(w)) for h, w in sizes.tolist()]
        areas = [h * w for h, w in level_sizes]
        if any(h <= 0 or w <= 0 for h, w in level_sizes):
            raise ValueError(
                f"multi_scale_deformable_attention: every level of `spatial_shapes` needs h > 0 and "
                f"w > 0, got {level_sizes}"
            )
        if sum(areas) != s:
            raise ValueError(
                f"multi_scale_deformable_attention: sum(h * w) over `spatial_shapes` {level_sizes} is "
                f"{sum(areas)} but `value` has S={s} tokens (value shape {tuple(value.shape)})"
            )
        expected_starts = [sum(areas[:i]) for i in range(num_levels)]
        if starts.tolist() != expected_starts:
            raise ValueError(
                f"multi_scale_deformable_attention: `level_start_index` {starts.tolist()} does not "
                f"match `spatial_shapes` {level_sizes}; expected {expected_starts}"
            )
    return MSDAShapes(
        batch=b,
        tokens=s,
        heads=m,
        head_dim=d,
        queries=q,
        levels=num_levels,
        points=p,
        level_sizes=level_sizes,
    )


def empty_msda_output(
    value: Tensor, sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """[B, Q, M*D] zeros for calls with B == 0 or Q == 0, still connected to the autograd graph.

    Every input then receives a zero gradient (instead of None), as a kernel launch would give.
    """
    b, _, m, d = value.shape
    q = sampling_locations.shape[1]
    link = value.sum() + sampling_locations.sum() + attention_weights.sum()
    return value.new_zeros(b, q, m * d) + (link * 0).to(value.dtype)
