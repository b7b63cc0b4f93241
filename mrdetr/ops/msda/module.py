"""Multi-scale deformable attention layer (Deformable DETR), with the official parameter names."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .dispatch import MSDA_BACKENDS, multi_scale_deformable_attention

__all__ = ["MultiScaleDeformableAttention"]


class MultiScaleDeformableAttention(nn.Module):
    """Each query attends to ``num_points`` learned sampling points per head and level.

    The layer returns ``dropout(output_proj(sampled))`` without the residual: the caller adds the
    query position embedding before and the identity after. Sub-module names match the official
    checkpoints: ``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``.

    Args:
        embed_dim: channels d of queries and values.
        num_heads: heads M; ``embed_dim`` must be divisible by it.
        num_levels: feature levels L.
        num_points: sampling points P per head and level.
        dropout: dropout on the output.
        backend: op backend, one of ``"auto"``, ``"reference"``, ``"cpu"``, ``"triton"``
            (see :func:`mrdetr.ops.msda.multi_scale_deformable_attention`); a plain attribute that
            may be changed after construction.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        dropout: float = 0.0,
        backend: str = "auto",
    ):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"MultiScaleDeformableAttention: embed_dim={embed_dim} must be divisible by num_heads={num_heads}"
            )
        if backend not in MSDA_BACKENDS:
            raise ValueError(
                f"MultiScaleDeformableAttention: backend must be one of {MSDA_BACKENDS}, got {backend!r}"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.backend = backend
        # Construction order = official order (RNG parity of the default inits before reset).
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Official init: offsets start on a per-head ring of directions, uniform attention."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (
            2.0 * math.pi / self.num_heads
        )
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)  # [M, 2]
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        grid = directions.view(self.num_heads, 1, 1, 2).repeat(
            1, self.num_levels, self.num_points, 1
        )
        for point in range(self.num_points):
            grid[:, :, point, :] *= point + 1
        self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        value: Tensor,
        reference_points: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        value_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend from every query to its sampling points.

        Args:
            query: [B, Q, d] queries (position embedding already added).
            value: [B, N, d] flattened multi-level features.
            reference_points: [B, Q, L, 2] normalised (x, y) points, or [B, Q, L, 4] boxes
                (cx, cy, w, h), in which case offsets are scaled by half the box size / P.
            spatial_shapes: [L, 2] int64 (h, w) per level; ``sum(h * w) == N``.
            level_start_index: [L] int64 first token of every level.
            value_padding_mask: [B, N] bool, True at padded tokens (their value is zeroed), or None.

        Returns:
            [B, Q, d] ``dropout(output_proj(sampled))`` (no residual).

        Raises:
            ValueError: bad shapes (reference points of a last dim other than 2 or 4, a value or
                mask of the wrong size).
        """
        batch, num_queries, _ = query.shape
        if value.dim() != 3 or value.shape[0] != batch or value.shape[2] != self.embed_dim:
            raise ValueError(
                f"MultiScaleDeformableAttention: `value` must be [B={batch}, N, {self.embed_dim}], "
                f"got {tuple(value.shape)}"
            )
        num_values = value.shape[1]
        ref_dim = reference_points.shape[-1]
        if reference_points.shape[:3] != (batch, num_queries, self.num_levels) or ref_dim not in (
            2,
            4,
        ):
            raise ValueError(
                "MultiScaleDeformableAttention: `reference_points` must be "
                f"[B={batch}, Q={num_queries}, L={self.num_levels}, 2 or 4], got {tuple(reference_points.shape)}"
            )
        value = self.value_proj(value)
        if value_padding_mask is not None:
            if value_padding_mask.shape != (batch, num_values):
                raise ValueError(
                    f"MultiScaleDeformableAttention: `value_padding_mask` must be [B={batch}, N={num_values}], "
                    f"got {tuple(value_padding_mask.shape)}"
                )
            # in place on value_proj's fresh output (its backward does not need it)
            value = value.masked_fill_(value_padding_mask[..., None], 0.0)
        value = value.view(batch, num_values, self.num_heads, -1)
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, num_queries, heads, levels, points)
        # Offsets viewed as [B, Q, M, L*P*2] and the per-(level, point, xy) terms as one [L*P*2]
        # block: the broadcasts run over a contiguous inner dimension of L*P*2 (over the inner
        # [P, 2] of the 6-d layout they do not vectorise: ~14x slower on the R50 encoder); the
        # arithmetic, and so every value, is the same.
        flat_offsets = offsets.view(batch, num_queries, heads, levels * points * 2)

        def per_point(t: Tensor) -> Tensor:  # [B, Q, L, 2] or [L, 2] -> [..., 1, L*P*2]
            t = t.unsqueeze(-2).expand(*t.shape[:-1], points, 2)
            return t.reshape(*t.shape[:-3], 1, levels * points * 2)

        if ref_dim == 2:
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(
                offsets.device
            )
            locations = per_point(reference_points) + flat_offsets / per_point(normalizer)[0]
        else:
            locations = (
                per_point(reference_points[..., :2])
                + flat_offsets / points * per_point(reference_points[..., 2:]) * 0.5
            )
        locations = locations.view(batch, num_queries, heads, levels, points, 2)
        sampled = multi_scale_deformable_attention(
            value, spatial_shapes, level_start_index, locations, weights, backend=self.backend
        )
        return self.dropout(self.output_proj(sampled))

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_levels={self.num_levels}, "
            f"num_points={self.num_points}, backend={self.backend!r}"
        )
