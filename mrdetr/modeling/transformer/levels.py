"""Flattening of multi-level feature maps into one token sequence."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...utils.tracing import sizes_tensor


@dataclass
class FlatLevels:
    """Metadata of L feature levels flattened (row-major, fine to coarse) into N tokens.

    Attributes:
        shapes: (H_l, W_l) per level as Python ints (0-dim int64 tensors while exporting, see
            :mod:`mrdetr.utils.tracing`).
        spatial_shapes: [L, 2] int64 (H_l, W_l).
        level_start_index: [L] int64 offset of each level in the token sequence.
        padding_mask: [B, N] bool, True on padded tokens.
        valid_ratios: [B, L, 2] (valid width / W, valid height / H) per level.
    """

    shapes: list[tuple[int, int]]
    spatial_shapes: Tensor
    level_start_index: Tensor
    padding_mask: Tensor
    valid_ratios: Tensor


def flatten_levels(
    features: list[Tensor], masks: list[Tensor], pos_embeds: list[Tensor], level_embeds: Tensor
) -> tuple[Tensor, Tensor, FlatLevels]:
    """Flatten per-level maps into tokens.

    Args:
        features: L maps [B, d, H_l, W_l].
        masks: L padding masks [B, H_l, W_l] (True = padding).
        pos_embeds: L positional embeddings [B, d, H_l, W_l].
        level_embeds: [L, d] learnable level embeddings.

    Returns:
        tokens [B, N, d], positions [B, N, d] (with level embedding) and the ``FlatLevels`` metadata.
    """
    shapes = [tuple(f.shape[-2:]) for f in features]  # symbolic while exporting
    tokens = torch.cat([f.flatten(2).transpose(1, 2) for f in features], 1)
    pos = torch.cat(
        [
            p.flatten(2).transpose(1, 2) + level_embeds[lvl].view(1, 1, -1)
            for lvl, p in enumerate(pos_embeds)
        ],
        1,
    )
    padding_mask = torch.cat([m.flatten(1) for m in masks], 1)
    device = tokens.device
    spatial_shapes = sizes_tensor(shapes, device)
    level_start_index = torch.cat(
        (spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1])
    )
    valid_ratios = torch.stack([valid_ratio(m) for m in masks], 1)
    levels = FlatLevels(shapes, spatial_shapes, level_start_index, padding_mask, valid_ratios)
    return tokens, pos, levels


def valid_ratio(mask: Tensor) -> Tensor:
    """(valid columns / W, valid rows / H) of a [B, H, W] padding mask -> [B, 2]."""
    _, h, w = mask.shape
    valid_h = torch.sum(~mask[:, :, 0], 1)
    valid_w = torch.sum(~mask[:, 0, :], 1)
    return torch.stack([valid_w.float() / w, valid_h.float() / h], -1)
