"""Two-stage proposals: anchors over encoder tokens, dense heads, top-K query selection."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..outputs import EncoderPredictions
from .levels import FlatLevels


def encoder_anchors(
    levels: FlatLevels, *, base_size: float = 0.05, valid_min: float = 0.01, valid_max: float = 0.99
) -> tuple[Tensor, Tensor]:
    """One anchor per token: the cell centre in the valid region with size ``base_size * 2**level``.

    Args:
        levels: flattened-level metadata (padding mask and shapes).
        base_size: anchor side at level 0, relative to the valid image.
        valid_min: anchors with any coordinate <= this are invalid.
        valid_max: anchors with any coordinate >= this are invalid.

    Returns:
        anchor logits [B, N, 4] (``log(p / (1 - p))``, +inf where padded or invalid) and the validity
        mask [B, N] (True = valid, not padded).
    """
    mask = levels.padding_mask
    b = mask.shape[0]
    proposals, cur = [], 0
    for lvl, (h, w) in enumerate(levels.shapes):
        level_mask = mask[:, cur : cur + h * w].view(b, h, w)
        valid_h = torch.sum(~level_mask[:, :, 0], 1)
        valid_w = torch.sum(~level_mask[:, 0, :], 1)
        # ``linspace(0, h - 1, h)`` of the official code, exactly: arange exports (see
        # ``DeformableEncoder.reference_points``)
        grid_y, grid_x = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=mask.device),
            torch.arange(w, dtype=torch.float32, device=mask.device),
            indexing="ij",
        )
        grid = torch.cat([grid_x.unsqueeze(-1), grid_y.unsqueeze(-1)], -1)
        scale = torch.cat([valid_w.unsqueeze(-1), valid_h.unsqueeze(-1)], 1).view(b, 1, 1, 2)
        grid = (grid.unsqueeze(0).expand(b, -1, -1, -1) + 0.5) / scale
        wh = torch.ones_like(grid) * base_size * (2.0**lvl)
        proposals.append(torch.cat((grid, wh), -1).view(b, -1, 4))
        cur += h * w
    anchors = torch.cat(proposals, 1)
    valid = ((anchors > valid_min) & (anchors < valid_max)).all(-1)
    anchors = torch.log(anchors / (1 - anchors))
    valid = valid & ~mask
    anchors = anchors.masked_fill(~valid.unsqueeze(-1), float("inf"))
    return anchors, valid


class ProposalHead(nn.Module):
    """Dense class and box heads over encoder tokens.

    Args:
        class_embed: Linear(d, C).
        bbox_embed: MLP(d, d, 4, 3) predicting a delta in logit space to add to the anchor.
    """

    def __init__(self, class_embed: nn.Module, bbox_embed: nn.Module):
        super().__init__()
        self.class_embed = class_embed
        self.bbox_embed = bbox_embed

    def forward(self, memory: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """[B, N, d], [B, N, 4] -> logits [B, N, C], box logits [B, N, 4]."""
        return self.class_embed(memory), self.bbox_embed(memory) + anchors


@dataclass
class SelectedQueries:
    """Top-K proposals of one encoder head.

    Attributes:
        box_logits: [B, K, 4] detached unsigmoided boxes (the initial references in logit space).
        predictions: dense encoder predictions for the loss.
    """

    box_logits: Tensor
    predictions: EncoderPredictions


class TwoStageProposals(nn.Module):
    """Encoder output projection shared by all heads, plus one ``ProposalHead`` per route that owns one.

    Args:
        heads: proposal heads keyed by route name (``"primary"``, ``"instruct"``).
        embed_dim: token width.
        num_queries: K proposals kept per head (top-K on class channel 0, class-agnostic).
        anchor_base_size: anchor side at the finest level.
        anchor_valid_range: (min, max) of valid anchor coordinates.
    """

    def __init__(
        self,
        *,
        heads: dict[str, ProposalHead],
        embed_dim: int = 256,
        num_queries: int = 300,
        anchor_base_size: float = 0.05,
        anchor_valid_range: tuple[float, float] = (0.01, 0.99),
    ):
        super().__init__()
        self.enc_output = nn.Linear(embed_dim, embed_dim)
        self.enc_output_norm = nn.LayerNorm(embed_dim)
        self.heads = nn.ModuleDict(heads)
        self.num_queries = num_queries
        self.anchor_base_size = anchor_base_size
        self.anchor_valid_range = tuple(anchor_valid_range)

    def prepare(self, memory: Tensor, levels: FlatLevels) -> tuple[Tensor, Tensor]:
        """Project the memory for the heads (invalid tokens zeroed) and build the anchors.

        Returns:
            output memory [B, N, d] and anchor logits [B, N, 4].
        """
        anchors, valid = encoder_anchors(
            levels,
            base_size=self.anchor_base_size,
            valid_min=self.anchor_valid_range[0],
            valid_max=self.anchor_valid_range[1],
        )
        output_memory = memory.masked_fill(~valid.unsqueeze(-1), 0.0)
        return self.enc_output_norm(self.enc_output(output_memory)), anchors

    def select(self, head: str, output_memory: Tensor, anchors: Tensor) -> SelectedQueries:
        """Run one head densely and keep its top-K boxes.

        Args:
            head: route name of the head.
            output_memory: [B, N, d] from ``prepare``.
            anchors: [B, N, 4] anchor logits from ``prepare``.
        """
        if output_memory.shape[1] < self.num_queries:
            raise ValueError(
                f"two-stage selection needs at least num_queries={self.num_queries} encoder tokens, "
                f"got {output_memory.shape[1]}: use a larger input image or fewer queries"
            )
        logits, box_logits = self.heads[head](output_memory, anchors)
        topk = torch.topk(logits[..., 0], self.num_queries, dim=1)[1]
        selected = torch.gather(box_logits, 1, topk.unsqueeze(-1).expand(-1, -1, 4)).detach()
        predictions = EncoderPredictions(
            logits=logits, boxes=box_logits.sigmoid(), anchors=anchors.sigmoid()
        )
        return SelectedQueries(box_logits=selected, predictions=predictions)
