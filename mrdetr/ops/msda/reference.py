"""Pure-PyTorch multi-scale deformable attention: the numerical ground truth.

One bilinear ``F.grid_sample`` per level (zero padding, ``align_corners=False``) followed by the
attention-weighted sum over levels and points, in the same order of operations as the official
pure-PyTorch fallback, so results agree with it to float rounding. Portable (any device, dtype,
``torch.jit.trace`` and ONNX export) but slow and memory hungry: it materialises every sampled
value, [B*M, D, Q, L*P], before the weighted sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_msda_inputs, empty_msda_output

__all__ = ["msda_reference"]


def _level_sizes_for_tracing(spatial_shapes: Tensor) -> list[tuple[Tensor, Tensor]]:
    """(h, w) of every level as 0-dim tensors read from ``spatial_shapes`` inside the graph, so a
    traced or exported graph follows the level sizes of its input instead of the export-time ones."""
    return [tuple(row.unbind(0)) for row in spatial_shapes.unbind(0)]


def msda_reference(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention with one ``grid_sample`` per level.

    Args:
        value: [B, S, M, D] values of all levels, flattened level by level (row-major per level).
        spatial_shapes: [L, 2] int64 (h, w) of every level; ``sum(h * w) == S``.
        level_start_index: [L] start of each level in S (validated, not needed by the algorithm).
        sampling_locations: [B, Q, M, L, P, 2] normalised (x, y); 0 and 1 are the outer edges of the
            map, so pixel centres sit at (i + 0.5) / w. Points outside the map read zeros.
        attention_weights: [B, Q, M, L, P] weights of the sampled points.

    Returns:
        [B, Q, M*D] attention-weighted sums, channels ordered head by head.

    Raises:
        ValueError: for inconsistent shapes, dtypes or level sizes.
    """
    if torch.jit.is_tracing():
        # The traced model was validated when it ran eagerly; reading shapes on the host here
        # would bake them into the graph as constants.
        level_sizes = _level_sizes_for_tracing(spatial_shapes)
    else:
        shapes = check_msda_inputs(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
        if shapes.batch == 0 or shapes.queries == 0:
            return empty_msda_output(value, sampling_locations, attention_weights)
        level_sizes = shapes.level_sizes
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape

    per_level_values = value.split([h * w for h, w in level_sizes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (h, w) in enumerate(level_sizes):
        # [B, h*w, M, D] -> [B, h*w, M*D] -> [B, M*D, h*w] -> [B*M, D, h, w]
        level_value = (
            per_level_values[level]
            .flatten(2)
            .transpose(1, 2)
            .reshape(batch * heads, head_dim, h, w)
        )
        # [B, Q, M, P, 2] -> [B, M, Q, P, 2] -> [B*M, Q, P, 2]
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        # [B*M, D, Q, P]
        sampled.append(
            F.grid_sample(
                level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
        )
    # [B, Q, M, L, P] -> [B, M, Q, L, P] -> [B*M, 1, Q, L*P]
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    output = output.view(batch, heads * head_dim, queries)
    return output.transpose(1, 2).contiguous()
