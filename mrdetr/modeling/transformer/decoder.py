"""Multi-route deformable decoder: one set of layers, run once per ``Route``.

Per layer: self-attention (with instruction tokens on ``Route.INSTRUCT``) -> deformable cross-attention
-> FFN (second weights on ``Route.SEP_FFN``), each followed by a residual and a LayerNorm; then iterative
box refinement with look-forward-twice (see :meth:`MultiRouteDecoder.forward`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from ...layers import FFN
from ...ops.msda import MultiScaleDeformableAttention
from ...structures import inverse_sigmoid
from ..routes import Route, route_spec
from .checkpointing import run_layer
from .levels import FlatLevels


@dataclass
class DecoderOutput:
    """What the decoder returns for one route (D layers, B images, Q queries).

    Attributes:
        hidden: [D, B, Q, d] hidden states after each layer.
        references: [D, B, Q, 4] refined boxes of each layer (normalised cxcywh, not detached); the
            detached copy of layer ``l``'s entry is the reference of layer ``l + 1``.
        boxes: [D, B, Q, 4] the supervised boxes of each layer, look-forward-twice:
            ``sigmoid(delta_l + inverse_sigmoid(references[l - 1]))`` (the initial boxes for l = 0),
            so layer ``l``'s loss also reaches layer ``l - 1``'s box head.
    """

    hidden: Tensor
    references: Tensor
    boxes: Tensor


class InstructiveSelfAttention(nn.Module):
    """Query self-attention shared by all routes; ``Route.INSTRUCT`` adds learnable instruction tokens.

    PRIMARY / SEP_FFN: ``x = norm(x + MHA(q=k=x+pos, v=x))``.
    INSTRUCT (``RouteSpec.instruction_tokens``): the instruction tokens are prepended to the keys (``content + pos``) and values (``content``)
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
        if route_spec(route).instruction_tokens:
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
    ) -> DecoderOutput:
        """Run all layers for one route, refining the boxes after each layer.

        Layer ``l`` reads the detached boxes of layer ``l - 1`` as its reference points and refines
        them: ``references[l] = sigmoid(bbox_heads[l](hidden[l]) + inverse_sigmoid(detached ref))``.
        The supervised box of layer ``l`` adds the same delta to the *undetached* previous boxes
        (look-forward-twice: in the official code the decoder returns the undetached references and
        the detector re-applies ``bbox_embed[l]`` to them); both boxes are equal in value.

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
            hidden states, refined references and supervised boxes of every layer.
        """
        x = query
        scale = torch.cat([levels.valid_ratios, levels.valid_ratios], -1)[:, None]
        previous = reference_boxes  # undetached boxes of the previous layer
        hidden, references, boxes = [], [], []
        for idx, layer in enumerate(self.layers):
            ref_input = reference_boxes[:, :, None] * scale
            args = (x, query_pos, ref_input, memory, levels, route, attn_mask)
            x = run_layer(layer, *args, use_checkpoint=self.use_checkpoint)
            delta = bbox_heads[idx](x)
            new_boxes = (delta + inverse_sigmoid(reference_boxes)).sigmoid()
            boxes.append((delta + inverse_sigmoid(previous)).sigmoid())
            reference_boxes = new_boxes.detach()
            previous = new_boxes
            hidden.append(x)
            references.append(new_boxes)
        return DecoderOutput(torch.stack(hidden), torch.stack(references), torch.stack(boxes))
