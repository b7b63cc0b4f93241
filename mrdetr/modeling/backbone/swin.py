"""Swin Transformer backbone in the detectron2 / official Mr. DETR key layout, built on timm layers.

Keys: ``patch_embed.{proj,norm}``, ``layers.{s}.blocks.{b}.{norm1, attn.qkv, attn.proj,
attn.relative_position_bias_table, attn.relative_position_index, norm2, mlp.fc1, mlp.fc2}``,
``layers.{s}.downsample.{reduction,norm}`` for every stage but the last, and ``norm{i}`` for every output
index ``i``. ``relative_position_index`` is a persistent int64 buffer (it is in the official checkpoints).

Block order is the official (detection) one, which differs from timm's ``SwinTransformer``:

- patch merging sits at the **end** of a stage (timm: at the start of the next stage);
- inside a block the normalised map is padded to a multiple of the window **before** the cyclic shift, and
  the shifted-window mask is built for the padded size (timm pads after the shift and clamps the window
  to small maps). On maps that are multiples of the window the two agree exactly.

timm provides the window attention (``WindowAttention``), MLP, drop-path, window partition and patch
merging (same 2x2 concatenation order as the original).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models.swin_transformer import (
    PatchMerging,
    WindowAttention,
    window_partition,
    window_reverse,
)
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

__all__ = ["SwinTransformer", "shifted_window_mask"]


class SwinWindowAttention(WindowAttention):
    """timm's window attention with ``relative_position_index`` stored in the state dict (as officially)."""

    def __init__(self, *, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True):
        super().__init__(dim=dim, num_heads=num_heads, window_size=window_size, qkv_bias=qkv_bias)
        index = self.relative_position_index
        del self.relative_position_index
        self.register_buffer("relative_position_index", index, persistent=True)


def shifted_window_mask(
    height: int,
    width: int,
    window_size: int,
    shift_size: int,
    device: torch.device | None = None,
    masked_value: float = -100.0,
) -> Tensor:
    """Additive attention mask of the shifted windows of a padded (height, width) map.

    Args:
        height: padded map height (a multiple of ``window_size``).
        width: padded map width (a multiple of ``window_size``).
        window_size: window side ws.
        shift_size: cyclic shift.
        masked_value: value added to logits between tokens of different regions (official -100).

    Returns:
        [num_windows, ws*ws, ws*ws] float mask (0 or ``masked_value``).
    """
    img_mask = torch.zeros((1, height, width, 1), device=device)
    slices = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    region = 0
    for hs in slices:
        for ws in slices:
            img_mask[:, hs, ws, :] = region
            region += 1
    windows = window_partition(img_mask, (window_size, window_size)).view(-1, window_size**2)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, masked_value).masked_fill(mask == 0, 0.0)


class SwinPatchMerging(PatchMerging):
    """timm's 2x2 patch merging (``norm`` then ``reduction``), registered in the official key order
    (``reduction`` before ``norm``). Input [B, H, W, C] (odd sizes are padded) -> [B, H/2, W/2, 2C]."""

    def __init__(self, *, dim: int):
        super().__init__(dim=dim, out_dim=2 * dim)
        norm = self.norm
        del self.norm
        self.norm = norm


class SwinBlock(nn.Module):
    """norm1 -> pad -> (cyclic shift) -> window attention -> unshift -> crop -> residual; norm2 -> MLP."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: float,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SwinWindowAttention(
            dim=dim, num_heads=num_heads, window_size=window_size, qkv_bias=qkv_bias
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio))

    def forward(self, x: Tensor, height: int, width: int, attn_mask: Tensor | None) -> Tensor:
        """x: [B, H*W, C] -> [B, H*W, C]; ``attn_mask`` is used when the block shifts."""
        b, _, c = x.shape
        ws = self.window_size
        shortcut = x
        x = self.norm1(x).view(b, height, width, c)
        pad_b = (ws - height % ws) % ws
        pad_r = (ws - width % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = x.shape[1:3]
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        else:
            attn_mask = None
        windows = window_partition(x, (ws, ws)).view(-1, ws * ws, c)
        windows = self.attn(windows, mask=attn_mask).view(-1, ws, ws, c)
        x = window_reverse(windows, (ws, ws), hp, wp)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x[:, :height, :width, :].reshape(b, height * width, c)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """``depth`` blocks (every second one shifted) followed by an optional patch merging."""

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: Sequence[float],
        downsample: bool,
        use_checkpoint: bool,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim=dim,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else self.shift_size,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=drop_path[i],
            )
            for i in range(depth)
        )
        self.downsample = SwinPatchMerging(dim=dim) if downsample else None

    def forward(self, x: Tensor, height: int, width: int) -> tuple[Tensor, Tensor, int, int]:
        """x: [B, H*W, C] -> (stage output [B, H*W, C], next input [B, H'*W', 2C], H', W')."""
        ws = self.window_size
        hp, wp = -(-height // ws) * ws, -(-width // ws) * ws
        attn_mask = shifted_window_mask(hp, wp, ws, self.shift_size, device=x.device).to(x.dtype)
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled() and x.requires_grad:
                x = checkpoint(block, x, height, width, attn_mask, use_reentrant=False)
            else:
                x = block(x, height, width, attn_mask)
        if self.downsample is None:
            return x, x, height, width
        down = self.downsample(x.view(x.shape[0], height, width, -1))
        return x, down.flatten(1, 2), (height + 1) // 2, (width + 1) // 2


class SwinPatchEmbed(nn.Module):
    """Pad to a multiple of the patch size, conv ``proj`` (kernel = stride = patch), LayerNorm ``norm``."""

    def __init__(self, *, patch_size: int, in_chans: int, embed_dim: int, patch_norm: bool):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, C, ceil(H/p), ceil(W/p)]."""
        p = self.patch_size
        x = F.pad(x, (0, (p - x.shape[-1] % p) % p, 0, (p - x.shape[-2] % p) % p))
        x = self.proj(x)
        if self.norm is not None:
            h, w = x.shape[-2:]
            x = (
                self.norm(x.flatten(2).transpose(1, 2))
                .transpose(1, 2)
                .reshape(x.shape[0], -1, h, w)
            )
        return x


class SwinTransformer(nn.Module):
    """Swin Transformer backbone returning ``{"p{i}": [B, C_i, H/2^(i+2), W/2^(i+2)]}`` for ``out_indices``.

    Defaults are Swin-L 384 (window 12, the official Mr. DETR Swin-L backbone).

    Args:
        pretrain_img_size: image size of the ImageNet pretraining (informative; no absolute position
            embedding is used).
        patch_size: patch side (stride of stage 0).
        in_chans: input channels.
        embed_dim: width C of stage 0 (stage s has ``C * 2**s``).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window side.
        mlp_ratio: MLP hidden width / block width.
        qkv_bias: bias in the qkv projection.
        drop_path_rate: stochastic depth, linearly increasing over all blocks up to this value.
        patch_norm: LayerNorm after the patch embedding.
        out_indices: stages whose (normalised) outputs are returned as ``p{i}``.
        use_checkpoint: recompute each block in backward (activation checkpointing) when training.
    """

    def __init__(
        self,
        *,
        pretrain_img_size: int = 384,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 192,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (6, 12, 24, 48),
        window_size: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.2,
        patch_norm: bool = True,
        out_indices: Sequence[int] = (1, 2, 3),
        use_checkpoint: bool = False,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(
                f"SwinTransformer: depths {tuple(depths)} and num_heads {tuple(num_heads)} differ in length"
            )
        if not out_indices or any(not 0 <= i < len(depths) for i in out_indices):
            raise ValueError(
                f"SwinTransformer: out_indices {tuple(out_indices)} must lie in [0, {len(depths)})"
            )
        self.pretrain_img_size = pretrain_img_size
        self.out_indices = tuple(out_indices)
        self.num_features = [embed_dim * 2**i for i in range(len(depths))]
        self.patch_embed = SwinPatchEmbed(
            patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, patch_norm=patch_norm
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for s, depth in enumerate(depths):
            start = sum(depths[:s])
            self.layers.append(
                SwinStage(
                    dim=self.num_features[s],
                    depth=depth,
                    num_heads=num_heads[s],
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path=rates[start : start + depth],
                    downsample=s < len(depths) - 1,
                    use_checkpoint=use_checkpoint,
                )
            )
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def out_channels(self) -> dict[str, int]:
        """Channels of each returned map."""
        return {f"p{i}": self.num_features[i] for i in self.out_indices}

    @property
    def out_strides(self) -> dict[str, int]:
        """Stride of each returned map."""
        stride = self.patch_embed.patch_size
        return {f"p{i}": stride * 2**i for i in self.out_indices}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """[B, 3, H, W] -> ``{"p{i}": [B, C_i, H_i, W_i]}``."""
        x = self.patch_embed(x)
        height, width = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        outs = {}
        for i, stage in enumerate(self.layers):
            out, x, next_h, next_w = stage(x, height, width)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                outs[f"p{i}"] = (
                    out.view(-1, height, width, self.num_features[i])
                    .permute(0, 3, 1, 2)
                    .contiguous()
                )
            height, width = next_h, next_w
            if i >= max(self.out_indices):
                break
        return outs
