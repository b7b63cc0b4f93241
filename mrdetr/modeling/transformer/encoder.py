"""Deformable encoder: post-norm layers of multi-scale deformable self-attention + FFN.

Mr. DETR++ option: a Mixture-of-Experts FFN replaces the dense FFN for the tokens of selected
(coarse) levels (``moe_levels``); the other levels keep the dense FFN. Without it nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ...layers import FFN
from ...ops.msda import MultiScaleDeformableAttention
from .checkpointing import run_layer
from .levels import FlatLevels


class DeformableEncoderLayer(nn.Module):
    """``x = norm1(x + self_attn(x + pos)); x = norm2(x + ffn(x))``.

    Args:
        embed_dim: token width.
        num_heads: MSDA heads.
        num_levels: feature levels.
        num_points: sampling points per head and level.
        ffn_dim: FFN hidden width.
        dropout: dropout in attention output and FFN.
        msda_backend: backend of the deformable-attention op.
        moe_ffn: Mr. DETR++ Mixture-of-Experts FFN (``forward(x, valid)``) used instead of ``ffn``
            for the tokens of ``moe_levels``; None = dense everywhere (Mr. DETR).
        moe_levels: level indices (0 = finest, negative counts from the coarsest) routed to ``moe_ffn``.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        ffn_dim: int = 2048,
        dropout: float = 0.0,
        msda_backend: str = "auto",
        moe_ffn: nn.Module | None = None,
        moe_levels: Sequence[int] = (),
    ):
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(
            embed_dim=embed_dim,
            num_heads=num_heads,
            num_levels=num_levels,
            num_points=num_points,
            dropout=dropout,
            backend=msda_backend,
        )
        self.norm1 = nn.LayerNorm(embed_dim)
        self.ffn = FFN(embed_dim=embed_dim, hidden_dim=ffn_dim, dropout=dropout)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.moe_ffn = moe_ffn
        self.moe_levels: tuple[int, ...] = ()
        if moe_ffn is not None:
            bad = [lvl for lvl in moe_levels if not -num_levels <= lvl < num_levels]
            if bad or not moe_levels:
                raise ValueError(
                    f"DeformableEncoderLayer: moe_levels must be a non-empty list of level indices in "
                    f"[-{num_levels}, {num_levels}), got {list(moe_levels)}"
                )
            self.moe_levels = tuple(sorted({lvl % num_levels for lvl in moe_levels}))

    def _ffn(self, x: Tensor, levels: FlatLevels) -> Tensor:
        """Dense FFN, or the MoE FFN on the tokens of ``moe_levels`` (runs of adjacent levels)."""
        if self.moe_ffn is None:
            return self.ffn(x)
        sizes = [h * w for h, w in levels.shapes]
        outs, start, lvl = [], 0, 0
        while lvl < len(sizes):
            use_moe = lvl in self.moe_levels
            end = lvl
            while end < len(sizes) and (end in self.moe_levels) == use_moe:
                end += 1
            stop = start + sum(sizes[lvl:end])
            chunk = x[:, start:stop]
            if use_moe:
                outs.append(self.moe_ffn(chunk, ~levels.padding_mask[:, start:stop]))
            else:
                outs.append(self.ffn(chunk))
            start, lvl = stop, end
        return torch.cat(outs, 1)

    def forward(
        self, x: Tensor, pos: Tensor, reference_points: Tensor, levels: FlatLevels
    ) -> Tensor:
        """Run one layer.

        Args:
            x: [B, N, d] tokens.
            pos: [B, N, d] positional + level embeddings.
            reference_points: [B, N, L, 2] normalised (x, y) per level.
            levels: flattened-level metadata (shapes, starts, padding mask).

        Returns:
            [B, N, d].
        """
        attn = self.self_attn(
            x + pos,
            x,
            reference_points,
            levels.spatial_shapes,
            levels.level_start_index,
            levels.padding_mask,
        )
        x = self.norm1(x + attn)
        return self.norm2(x + self._ffn(x, levels))


class DeformableEncoder(nn.Module):
    """A stack of ``DeformableEncoderLayer`` (no final norm).

    Args:
        num_layers: number of layers.
        use_checkpoint: recompute each layer's activations in backward (non-reentrant activation
            checkpointing) to save memory; outputs and gradients are unchanged.
        moe_factory: Mr. DETR++: builds one MoE FFN per layer in ``moe_layers`` (e.g.
            ``mrdetr.modeling.transformer.moe.moe_ffn_factory(...)``); None = no MoE (Mr. DETR).
        moe_levels: levels whose tokens use the MoE FFN (e.g. ``[-1]``, the coarsest).
        moe_layers: layer indices that get an MoE FFN (None = every layer).
        **layer_kwargs: arguments of ``DeformableEncoderLayer``.
    """

    def __init__(
        self,
        *,
        num_layers: int = 6,
        use_checkpoint: bool = False,
        moe_factory: Callable[[], nn.Module] | None = None,
        moe_levels: Sequence[int] = (),
        moe_layers: Sequence[int] | None = None,
        **layer_kwargs,
    ):
        super().__init__()
        if moe_factory is None:
            self.layers = nn.ModuleList(
                DeformableEncoderLayer(**layer_kwargs) for _ in range(num_layers)
            )
        else:
            moe_layers = range(num_layers) if moe_layers is None else moe_layers
            bad = [i for i in moe_layers if not 0 <= i < num_layers]
            if bad:
                raise ValueError(f"DeformableEncoder: moe_layers {bad} outside [0, {num_layers})")
            self.layers = nn.ModuleList(
                DeformableEncoderLayer(
                    **layer_kwargs,
                    moe_ffn=moe_factory() if i in moe_layers else None,
                    moe_levels=moe_levels,
                )
                for i in range(num_layers)
            )
        self.use_checkpoint = use_checkpoint

    @staticmethod
    def reference_points(levels: FlatLevels) -> Tensor:
        """Cell centres of every level, normalised by the valid region and re-scaled per level.

        Returns:
            [B, N, L, 2] (x, y).
        """
        valid_ratios = levels.valid_ratios
        device = valid_ratios.device
        refs = []
        for lvl, (h, w) in enumerate(levels.shapes):
            # cell centres 0.5, 1.5, ..., h - 0.5: ``linspace(0.5, h - 0.5, h)`` of the official
            # code, exactly (the step is 1); arange also exports for a size that is only known in
            # the graph, and for h == 1 (ONNX's linspace divides by h - 1)
            ref_y, ref_x = torch.meshgrid(
                torch.arange(h, dtype=torch.float32, device=device) + 0.5,
                torch.arange(w, dtype=torch.float32, device=device) + 0.5,
                indexing="ij",
            )
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
            refs.append(torch.stack((ref_x, ref_y), -1))
        reference_points = torch.cat(refs, 1)
        return reference_points[:, :, None] * valid_ratios[:, None]

    def forward(self, x: Tensor, pos: Tensor, levels: FlatLevels) -> Tensor:
        """Encode flattened multi-level tokens.

        Args:
            x: [B, N, d] flattened features.
            pos: [B, N, d] positional + level embeddings.
            levels: flattened-level metadata.

        Returns:
            [B, N, d] memory.
        """
        reference_points = self.reference_points(levels)
        for layer in self.layers:
            x = run_layer(
                layer, x, pos, reference_points, levels, use_checkpoint=self.use_checkpoint
            )
        return x
