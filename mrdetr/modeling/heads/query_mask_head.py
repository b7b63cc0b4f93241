"""Query-embedding mask head: mask logits = MLP(query) . per-pixel embeddings (MaskFormer / Mask DINO).

An alternative to DETR's ``MHAttentionMap`` + ``MaskHeadSmallConv`` pair for models without an official
checkpoint to match (the panoptic variant). There, the per-query signal is a few attention-map channels
concatenated to the memory, and the head learns slowly; here each query's mask embedding multiplies the
pixel embeddings directly. Measured on the synthetic panoptic quick start (frozen features, mask losses
only, base LR 4e-4): dice 1.57 -> 0.48 in 100 steps, while DETR's head stays at 1.6 for 160 steps even at
2e-3 (``docs/panoptic.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...layers import MLP

__all__ = ["QueryMaskHead"]


class QueryMaskHead(nn.Module):
    """Per-pixel embeddings from the coarsest memory map and three FPN maps, dotted with query embeddings.

    Pixel path: ``memory_proj`` (1x1) on the memory map, then for each FPN map (coarse to fine) a 1x1
    ``lateral`` projection plus the bilinearly upsampled running map, then ``output`` (3x3 conv, GroupNorm,
    ReLU, 1x1 conv). Query path: ``mask_embed`` (an MLP). Logits: their dot product.

    Args:
        embed_dim: width of the queries and of the memory map.
        fpn_dims: channels of the three FPN maps (coarse to fine).
        mask_dim: width of the pixel / mask embeddings.
        mlp_layers: layers of ``mask_embed``.
        num_groups: GroupNorm groups of ``output``.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 256,
        fpn_dims: Sequence[int] = (1024, 512, 256),
        mask_dim: int = 256,
        mlp_layers: int = 3,
        num_groups: int = 8,
    ):
        super().__init__()
        if mask_dim % num_groups:
            raise ValueError(
                f"QueryMaskHead: mask_dim {mask_dim} is not divisible by num_groups {num_groups}"
            )
        self.memory_proj = nn.Conv2d(embed_dim, mask_dim, 1)
        self.lateral = nn.ModuleList(nn.Conv2d(c, mask_dim, 1) for c in fpn_dims)
        self.output = nn.Sequential(
            nn.Conv2d(mask_dim, mask_dim, 3, padding=1),
            nn.GroupNorm(num_groups, mask_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(mask_dim, mask_dim, 1),
        )
        self.mask_embed = MLP(embed_dim, embed_dim, mask_dim, mlp_layers)

    def pixel_embeddings(self, memory: Tensor, fpns: Sequence[Tensor]) -> Tensor:
        """[B, d, h, w] memory map and FPN maps -> [B, mask_dim, H, W] at the finest FPN map's size."""
        x = self.memory_proj(memory)
        for lateral, fpn in zip(self.lateral, fpns, strict=True):
            up = F.interpolate(x, size=fpn.shape[-2:], mode="bilinear", align_corners=False)
            x = lateral(fpn) + up
        return self.output(x)

    def forward(self, queries: Tensor, memory: Tensor, fpns: Sequence[Tensor]) -> Tensor:
        """Mask logits.

        Args:
            queries: [B, Q, embed_dim] decoder hidden states.
            memory: [B, embed_dim, h, w] coarsest memory map.
            fpns: three maps [B, fpn_dims[i], H_i, W_i], coarse to fine.

        Returns:
            [B, Q, H, W] mask logits at the finest FPN map's size.
        """
        pixels = self.pixel_embeddings(memory, fpns)
        return torch.einsum("bqc,bchw->bqhw", self.mask_embed(queries), pixels)
