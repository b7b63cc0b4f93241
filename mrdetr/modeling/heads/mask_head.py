"""DETR-style instance-mask head of Mr. DETR-Deformable-InstanceSeg.

- :class:`SegInputProjection` (``seg_input_proj``): 3x3 stride-2 convs on the backbone maps
  (res5, res4, res3 -> strides 64, 32, 16) giving the FPN inputs of the mask head.
- :class:`MHAttentionMap` (``bbox_attention``): per-query multi-head attention maps over the coarsest
  (stride 64) memory level, softmax taken **jointly over heads and pixels** (DETR's quirk, kept for parity).
- :class:`MaskHeadSmallConv` (``mask_head``): conv/GN/ReLU tower from the memory map concatenated with the
  attention maps, upsampled with the three FPN maps, to one mask logit map per query at stride 16.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["MHAttentionMap", "MaskHeadSmallConv", "SegInputProjection"]


class SegInputProjection(nn.ModuleList):
    """One 3x3 stride-2 conv per backbone map (official keys ``seg_input_proj.{i}.{weight,bias}``).

    Args:
        in_features: backbone outputs to use, in output order (official: res5, res4, res3).
        in_channels: their channels.
        out_channels: output channels of each conv (official 1024, 512, 256).
        kernel_size: conv kernel.
        stride: conv stride.

    Shapes:
        ``{name: [B, C_in_i, H_i, W_i]}`` -> list of [B, C_out_i, ceil(H_i / stride), ceil(W_i / stride)].
    """

    def __init__(
        self,
        *,
        in_features: Sequence[str] = ("res5", "res4", "res3"),
        in_channels: Sequence[int] = (2048, 1024, 512),
        out_channels: Sequence[int] = (1024, 512, 256),
        kernel_size: int = 3,
        stride: int = 2,
    ):
        if not len(in_features) == len(in_channels) == len(out_channels):
            raise ValueError(
                "SegInputProjection: in_features, in_channels and out_channels must have the same "
                f"length, got {len(in_features)}, {len(in_channels)}, {len(out_channels)}"
            )
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2)
            for c_in, c_out in zip(in_channels, out_channels)
        )
        self.in_features = tuple(in_features)

    def forward(self, features: dict[str, Tensor]) -> list[Tensor]:
        missing = [name for name in self.in_features if name not in features]
        if missing:
            raise KeyError(
                f"SegInputProjection: backbone outputs {missing} missing (got {sorted(features)})"
            )
        return [conv(features[name]) for conv, name in zip(self, self.in_features)]


class MHAttentionMap(nn.Module):
    """Attention maps of each query over a feature map (no values), DETR's ``MHAttentionMap``.

    Args:
        query_dim: width of the queries (decoder hidden states).
        hidden_dim: width of q/k (split over heads).
        num_heads: attention heads.
        dropout: dropout on the attention weights.
    """

    def __init__(
        self,
        *,
        query_dim: int = 256,
        hidden_dim: int = 256,
        num_heads: int = 8,
        dropout: float = 0.0,
    ):
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(
                f"MHAttentionMap: hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}"
            )
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.q_linear = nn.Linear(query_dim, hidden_dim)
        self.k_linear = nn.Linear(query_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.normalize_fact = float(hidden_dim / num_heads) ** -0.5
        for linear in (self.q_linear, self.k_linear):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attention maps.

        Args:
            q: [B, Q, query_dim] queries.
            k: [B, query_dim, H, W] feature map.
            mask: [B, H, W] bool, True on padded pixels (they get zero weight).

        Returns:
            [B, Q, num_heads, H, W], summing to 1 over (heads, pixels) for each query.
        """
        q = self.q_linear(q)
        k = F.conv2d(k, self.k_linear.weight[:, :, None, None], self.k_linear.bias)
        b, nq = q.shape[:2]
        head_dim = self.hidden_dim // self.num_heads
        qh = q.view(b, nq, self.num_heads, head_dim)
        kh = k.view(b, self.num_heads, head_dim, k.shape[-2], k.shape[-1])
        weights = torch.einsum("bqnc,bnchw->bqnhw", qh * self.normalize_fact, kh)
        if mask is not None:
            weights = weights.masked_fill(mask[:, None, None], float("-inf"))
        weights = F.softmax(weights.flatten(2), dim=-1).view(weights.shape)
        return self.dropout(weights)


class MaskHeadSmallConv(nn.Module):
    """DETR's ``MaskHeadSmallConv``: conv tower with FPN skip connections, one logit map per query.

    Widths: ``dim = context_dim + num_attention_heads`` -> context/2 -> context/4 -> context/8 ->
    context/16 -> 1, with ``adapter{1,2,3}`` mapping the FPN maps to the widths after ``lay2``, ``lay3``,
    ``lay4`` (official: d 256, 8 heads -> 264).

    Args:
        context_dim: memory width d.
        num_attention_heads: heads of the attention maps concatenated to the memory.
        fpn_dims: channels of the three FPN maps (coarse to fine; 1024, 512, 256 officially).
        num_groups: GroupNorm groups of every norm.
    """

    def __init__(
        self,
        *,
        context_dim: int = 256,
        num_attention_heads: int = 8,
        fpn_dims: Sequence[int] = (1024, 512, 256),
        num_groups: int = 8,
    ):
        super().__init__()
        dim = context_dim + num_attention_heads
        if len(fpn_dims) != 3:
            raise ValueError(
                f"MaskHeadSmallConv: fpn_dims must have 3 entries, got {tuple(fpn_dims)}"
            )
        widths = [dim, context_dim // 2, context_dim // 4, context_dim // 8, context_dim // 16]
        self.lay1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.gn1 = nn.GroupNorm(num_groups, dim)
        self.lay2 = nn.Conv2d(dim, widths[1], 3, padding=1)
        self.gn2 = nn.GroupNorm(num_groups, widths[1])
        self.lay3 = nn.Conv2d(widths[1], widths[2], 3, padding=1)
        self.gn3 = nn.GroupNorm(num_groups, widths[2])
        self.lay4 = nn.Conv2d(widths[2], widths[3], 3, padding=1)
        self.gn4 = nn.GroupNorm(num_groups, widths[3])
        self.lay5 = nn.Conv2d(widths[3], widths[4], 3, padding=1)
        self.gn5 = nn.GroupNorm(num_groups, widths[4])
        self.out_lay = nn.Conv2d(widths[4], 1, 3, padding=1)
        self.adapter1 = nn.Conv2d(fpn_dims[0], widths[1], 1)
        self.adapter2 = nn.Conv2d(fpn_dims[1], widths[2], 1)
        self.adapter3 = nn.Conv2d(fpn_dims[2], widths[3], 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.constant_(m.bias, 0)

    @staticmethod
    def _fuse(x: Tensor, fpn: Tensor, adapter: nn.Module) -> Tensor:
        """adapter(fpn) repeated per query + nearest-upsampled x; x is [B*Q, C, h, w], fpn [B, C', H, W]."""
        cur = adapter(fpn)
        cur = cur.repeat_interleave(x.shape[0] // cur.shape[0], dim=0)
        return cur + F.interpolate(x, size=cur.shape[-2:], mode="nearest")

    def forward(self, x: Tensor, bbox_mask: Tensor, fpns: Sequence[Tensor]) -> Tensor:
        """Mask logits.

        Args:
            x: [B, d, H, W] memory map (coarsest level).
            bbox_mask: [B, Q, heads, H, W] attention maps.
            fpns: three maps [B, fpn_dims[i], H_i, W_i], coarse to fine.

        Returns:
            [B*Q, 1, H_fine, W_fine] mask logits (queries of image 0 first).
        """
        nq = bbox_mask.shape[1]
        x = torch.cat([x.repeat_interleave(nq, dim=0), bbox_mask.flatten(0, 1)], 1)
        x = F.relu(self.gn1(self.lay1(x)))
        x = F.relu(self.gn2(self.lay2(x)))
        x = self._fuse(x, fpns[0], self.adapter1)
        x = F.relu(self.gn3(self.lay3(x)))
        x = self._fuse(x, fpns[1], self.adapter2)
        x = F.relu(self.gn4(self.lay4(x)))
        x = self._fuse(x, fpns[2], self.adapter3)
        x = F.relu(self.gn5(self.lay5(x)))
        return self.out_lay(x)
