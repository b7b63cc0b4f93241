"""The Mr. DETR transformer: encoder, two-stage query selection and the multi-route decoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...layers import box_sine_embedding
from ...ops.msda import MultiScaleDeformableAttention
from ..routes import Route
from .decoder import DecoderOutput, MultiRouteDecoder
from .encoder import DeformableEncoder
from .levels import FlatLevels, flatten_levels
from .proposals import ProposalHead, SelectedQueries, TwoStageProposals


@dataclass
class EncodedImage:
    """Encoder output and what the decoder routes need from it.

    Attributes:
        memory: [B, N, d] encoder output.
        levels: flattened-level metadata.
        output_memory: [B, N, d] projected memory for the proposal heads.
        anchors: [B, N, 4] anchor logits (+inf where invalid).
    """

    memory: Tensor
    levels: FlatLevels
    output_memory: Tensor
    anchors: Tensor


class MrDETRTransformer(nn.Module):
    """Encoder + two-stage proposals + multi-route decoder (mixed query selection).

    Args:
        encoder: the deformable encoder.
        decoder: the multi-route decoder.
        proposals: two-stage proposal generator with one head per route that owns one.
        embed_dim: token width d.
        num_feature_levels: number of levels L (size of ``level_embeds``).
        query_pos_feats: sine frequencies per box coordinate for query positions (128 -> 4*128 = 2d).
        query_pos_temperature: temperature of the box sine embedding.
    """

    def __init__(
        self,
        *,
        encoder: DeformableEncoder,
        decoder: MultiRouteDecoder,
        proposals: TwoStageProposals,
        embed_dim: int = 256,
        num_feature_levels: int = 4,
        query_pos_feats: int = 128,
        query_pos_temperature: float = 10000.0,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.proposals = proposals
        self.embed_dim = embed_dim
        self.level_embeds = nn.Parameter(torch.empty(num_feature_levels, embed_dim))
        self.query_pos_feats = query_pos_feats
        self.query_pos_temperature = query_pos_temperature
        self.pos_trans = nn.Linear(4 * query_pos_feats, 2 * embed_dim)
        self.pos_trans_norm = nn.LayerNorm(2 * embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: xavier-uniform for every matrix (proposal heads excepted), MSDA's own init,
        level embeddings ~ N(0, 1)."""
        head_params = {id(p) for p in self.proposals.heads.parameters()}
        for p in self.parameters():
            if p.dim() > 1 and id(p) not in head_params:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MultiScaleDeformableAttention):
                m.reset_parameters()
        nn.init.normal_(self.level_embeds)

    def encode(
        self, features: list[Tensor], masks: list[Tensor], pos_embeds: list[Tensor]
    ) -> EncodedImage:
        """Flatten the levels, run the encoder and prepare the proposal inputs.

        Args:
            features: L maps [B, d, H_l, W_l].
            masks: L padding masks [B, H_l, W_l].
            pos_embeds: L positional embeddings [B, d, H_l, W_l].
        """
        tokens, pos, levels = flatten_levels(features, masks, pos_embeds, self.level_embeds)
        memory = self.encoder(tokens, pos, levels)
        output_memory, anchors = self.proposals.prepare(memory, levels)
        return EncodedImage(memory, levels, output_memory, anchors)

    def select(self, encoded: EncodedImage, head: Route) -> SelectedQueries:
        """Top-K proposals of the route's encoder head."""
        return self.proposals.select(head.value, encoded.output_memory, encoded.anchors)

    def query_pos(self, box_logits: Tensor) -> Tensor:
        """Positional queries from box logits [B, Q, 4] -> [B, Q, d] (first half of ``pos_trans``)."""
        embed = box_sine_embedding(
            box_logits, num_pos_feats=self.query_pos_feats, temperature=self.query_pos_temperature
        )
        return self.pos_trans_norm(self.pos_trans(embed))[..., : self.embed_dim]

    def decode(
        self,
        encoded: EncodedImage,
        route: Route,
        query: Tensor,
        box_logits: Tensor,
        bbox_heads: nn.ModuleList,
        attn_mask: Tensor | None = None,
    ) -> DecoderOutput:
        """Run the decoder for one route from box logits [B, Q, 4] and content queries [B, Q, d].

        Returns:
            hidden states, refined references and supervised (look-forward-twice) boxes per layer.
        """
        return self.decoder(
            query,
            self.query_pos(box_logits),
            box_logits.sigmoid(),
            encoded.memory,
            encoded.levels,
            route,
            bbox_heads,
            attn_mask,
        )


__all__ = [
    "DecoderOutput",
    "EncodedImage",
    "MrDETRTransformer",
    "ProposalHead",
    "TwoStageProposals",
]
