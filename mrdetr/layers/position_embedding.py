"""Sine positional embeddings for feature maps and for boxes."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PositionEmbeddingSine(nn.Module):
    """DETR sine embedding of a padding mask (no parameters).

    Cumulative counts of valid pixels along y and x are normalised to ``(cum + offset) / (last + eps) * scale``,
    divided by ``temperature ** (2 * (i // 2) / num_pos_feats)`` and mapped through interleaved sin/cos.

    Args:
        num_pos_feats: channels per axis (output has ``2 * num_pos_feats`` channels, y first).
        temperature: frequency base (10000 in the 12-epoch configs, 20 in most 24-epoch ones).
        normalize: normalise the cumulative counts to ``[0, scale]``.
        scale: range of the normalised coordinates.
        eps: added to the denominator of the normalisation.
        offset: added to the cumulative counts before normalising (-0.5 in the 12-epoch configs).
    """

    def __init__(
        self,
        *,
        num_pos_feats: int = 128,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: float = 2 * math.pi,
        eps: float = 1e-6,
        offset: float = 0.0,
    ):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps
        self.offset = offset

    def forward(self, mask: Tensor) -> Tensor:
        """Embed a padding mask.

        Args:
            mask: [B, H, W] bool, True on padding.

        Returns:
            [B, 2 * num_pos_feats, H, W] float32 embedding.
        """
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (
            2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats
        )
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def box_sine_embedding(
    box_logits: Tensor, *, num_pos_feats: int = 128, temperature: float = 10000.0
) -> Tensor:
    """Sine embedding of boxes given in logit space (two-stage query positions).

    Args:
        box_logits: [B, Q, 4] unsigmoided boxes.
        num_pos_feats: frequencies per coordinate.
        temperature: frequency base.

    Returns:
        [B, Q, 4 * num_pos_feats]: per coordinate, interleaved sin/cos of ``sigmoid(x) * 2 pi / dim_t``.
    """
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=box_logits.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)
    pos = box_logits.sigmoid() * (2 * math.pi)
    pos = pos[:, :, :, None] / dim_t
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=4).flatten(2)
