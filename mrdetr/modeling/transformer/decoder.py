"""Multi-route deformable decoder: one set of layers, run once per ``Route``.

Per layer: self-attention (with instruction tokens on ``Route.INSTRUCT``) -> deformable cross-attention
-> FFN (second weights on ``Route.SEP_FFN``), each followed by a residual and a LayerNorm; then iterative
box refinement with look-forward-twice.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ...layers import FFN
from ...ops.msda import MultiScaleDeformableAttention
from ...structures import inverse_sigmoid
from ..routes import Route
from .levels import FlatLevels


class InstructiveSelfAttention(nn.Module):
    """Query self-attention shared by all routes; ``Route.INSTRUCT`` adds learnable instruction tokens.

    PRIMARY / SEP_FFN: ``x = norm(x + MHA(q=k=x+pos, v=x))``.
    INSTRUCT: the instruction tokens are prepended to the keys (``content + pos``) and values (``content``)
    and the result goes through ``norm_instruct``. The tokens only act as extra keys/values: their own
    outputs are discarded by the method, so they are not computed as queries here.

    Args:
        embed_dim: query width.
        num_heads: attention heads.
        num_instruction_tokens: instruction tokens of the INSTRUCT route (10 in Mr. DETR).
        dropout: attention and residual dropout.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_instruction_tokens: int = 10,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.instruction_content = nn.Embedding(num_instruction_tokens, embed_dim)
        self.instruction_pos = nn.Embedding(num_instruction_tokens, embed_dim)
        self.norm = nn.LayerNorm(embed_dim)
        self.norm_instruct = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, pos: Tensor, route: Route, attn_mask: Tensor | None = None
    ) -> Tensor:
        """Attend among queries.

        Args:
            x: [B, Q, d] query content.
            pos: [B, Q, d] query positions.
            route: the decoder route.
            attn_mask: [Q, Q] bool (True = blocked) for PRIMARY/SEP_FFN, [Q, I + Q] for INSTRUCT, or None.

        Returns:
            [B, Q, d].
        """
        q = x + pos
        if route is Route.INSTRUCT:
            b = x.shape[0]
            instr = self.instruction_content.weight.unsqueeze(0).expand(b, -1, -1)
            instr_key = instr + self.instruction_pos.weight.unsqueeze(0)
            k = torch.cat((instr_key, q), 1)
            v = torch.cat((instr, x), 1)
            out = self.attn(q, k, v, attn_mask=attn_mask, need_weights=False)[0]
            return self.norm_instruct(x + self.dropout(out))
        out = self.attn(q, q, x, attn_mask=attn_mask, need_weights=False)[0]
        return self.norm(x + self.dropout(out))


class RouteFFN(nn.Module):
    """The decoder FFN: ``primary`` weights for PRIMARY and INSTRUCT, ``sep`` weights for SEP_FFN.

    Args:
        embed_dim: width.
        hidden_dim: hidden width.
        dropout: dropout inside the FFN.
    """

    def __init__(self, *, embed_dim: int = 256, hidden_dim: int = 2048, dropout: float = 0.0):
        super().__init__()
        self.primary = FFN(embed_dim=embed_dim, hidden_dim=hidden_dim, dropout=dropout)
        self.sep = FFN(embed_dim=embed_dim, hidden_dim=hidden_dim, dropout=dropout)

    def forward(self, x: Tensor, route: Route) -> Tensor:
        """[B, Q, d] -> [B, Q, d] with the route's weights."""
        return self.sep(x) if route is Route.SEP_FFN else self.primary(x)


class MultiRouteDecoderLayer(nn.Module):
    """Self-attention -> norm, MSDA cross-attention -> norm, route FFN -> norm (all post-norm).

    Args:
        self_attn: the (instructive) self-attention module.
        cross_attn: deformable cross-attention over the encoder memory.
        ffn: the route-aware FFN.
        embed_dim: width (for the norms).
    """

    def __init__(
        self,
        *,
        self_attn: InstructiveSelfAttention,
        cross_attn: MultiScaleDeformableAttention,
        ffn: nn.Module,
        embed_dim: int = 256,
    ):
        super().__init__()
        self.self_attn = self_attn
        self.cross_attn = cross_attn
        self.norm_cross = nn.LayerNorm(embed_dim)
        self.ffn = ffn
        self.norm_ffn = nn.LayerNorm(embed_dim)

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        reference_points: Tensor,
        memory: Tensor,
        levels: FlatLevels,
        route: Route,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """One layer.

        Args:
            x: [B, Q, d] queries.
            pos: [B, Q, d] query positions.
            reference_points: [B, Q, L, 4] boxes scaled by each level's valid ratio.
            memory: [B, N, d] encoder memory.
            levels: flattened-level metadata.
            route: the decoder route.
            attn_mask: self-attention mask (see ``InstructiveSelfAttention``).

        Returns:
            [B, Q, d].
        """
        x = self.self_attn(x, pos, route, attn_mask)
        cross = self.cross_attn(
            x + pos,
            memory,
            reference_points,
            levels.spatial_shapes,
            levels.level_start_index,
            levels.padding_mask,
        )
        x = self.norm_cross(x + cross)
        return self.norm_ffn(x + self.ffn(x, route))


class MultiRouteDecoder(nn.Module):
    """Decoder layers with iterative box refinement; the box heads are passed in by the caller.

    Args:
        num_layers: number of layers D.
        embed_dim: query width d.
        num_heads: attention heads (self- and cross-attention).
        num_levels: feature levels of the memory.
        num_points: MSDA sampling points per head and level.
        ffn_dim: FFN hidden width.
        dropout: dropout everywhere in the layer.
        num_instruction_tokens: instruction tokens of the INSTRUCT route, per layer.
        msda_backend: backend of the deformable-attention op.
        ffn_factory: builds the route-aware FFN of one layer (default: ``RouteFFN``); Mr. DETR++ passes
            a Mixture-of-Experts FFN here.
        use_checkpoint: recompute each layer in backward (non-reentrant activation checkpointing).
    """

    def __init__(
        self,
        *,
        num_layers: int = 6,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        ffn_dim: int = 2048,
        dropout: float = 0.0,
        num_instruction_tokens: int = 10,
        msda_backend: str = "auto",
        ffn_factory: Callable[[], nn.Module] | None = None,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        if ffn_factory is None:
            ffn_factory = partial(
                RouteFFN, embed_dim=embed_dim, hidden_dim=ffn_dim, dropout=dropout
            )
        self.layers = nn.ModuleList(
            MultiRouteDecoderLayer(
                self_attn=InstructiveSelfAttention(
                    embed_dim=embed_dim,
                    num_heads=num_heads,
                    num_instruction_tokens=num_instruction_tokens,
                    dropout=dropout,
                ),
                cross_attn=MultiScaleDeformableAttention(
                    embed_dim=embed_dim,
                    num_heads=num_heads,
                    num_levels=num_levels,
                    num_points=num_points,
                    dropout=dropout,
                    backend=msda_backend,
                ),
                ffn=ffn_factory(),
                embed_dim=embed_dim,
            )
            for _ in range(num_layers)
        )
        self.use_checkpoint = use_checkpoint

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        reference_boxes: Tensor,
        memory: Tensor,
        levels: FlatLevels,
        route: Route,
        bbox_heads: nn.ModuleList,
        attn_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Run all layers for one route.

        Args:
            query: [B, Q, d] content queries.
            query_pos: [B, Q, d] positional queries.
            reference_boxes: [B, Q, 4] sigmoided initial boxes (cxcywh, normalised).
            memory: [B, N, d].
            levels: flattened-level metadata.
            route: which route to run.
            bbox_heads: one box MLP per layer (refinement deltas in logit space).
            attn_mask: self-attention mask.

        Returns:
            hidden [D, B, Q, d]; references [D, B, Q, 4], the refined boxes of each layer, not detached
            (look-forward-twice); box deltas [D, B, Q, 4] (``bbox_heads[l](hidden[l])``).
        """
        x = query
        scale = torch.cat([levels.valid_ratios, levels.valid_ratios], -1)[:, None]
        hidden, references, deltas = [], [], []
        for idx, layer in enumerate(self.layers):
            ref_input = reference_boxes[:, :, None] * scale
            args = (x, query_pos, ref_input, memory, levels, route, attn_mask)
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, *args, use_reentrant=False)
            else:
                x = layer(*args)
            delta = bbox_heads[idx](x)
            new_boxes = (delta + inverse_sigmoid(reference_boxes)).sigmoid()
            reference_boxes = new_boxes.detach()
            hidden.append(x)
            references.append(new_boxes)
            deltas.append(delta)
        return torch.stack(hidden), torch.stack(references), torch.stack(deltas)
