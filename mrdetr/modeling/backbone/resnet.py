"""ResNet backbone in the detectron2 key layout with frozen batch norm.

Keys: ``stem.conv1.{weight,norm.*}``, ``res{2..5}.{block}.{conv1,conv2,conv3}.{weight,norm.*}`` and
``res{k}.0.shortcut.{weight,norm.*}``; the stride sits on the 3x3 conv (torchvision style).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from mrdetr.layers.frozen_batchnorm import FrozenBatchNorm2d


class ConvNorm(nn.Conv2d):
    """A bias-free conv followed by its own ``norm`` (FrozenBatchNorm2d), no activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=False,
        )
        self.norm = FrozenBatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(super().forward(x))


class BasicStem(nn.Module):
    """conv 7x7/2 + norm + ReLU + max-pool 3x3/2 (stride 4 overall)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64):
        super().__init__()
        self.conv1 = ConvNorm(in_channels, out_channels, 7, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(self.conv1(x).relu_(), kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 bottleneck with a projection shortcut when shapes change."""

    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int, stride: int):
        super().__init__()
        if in_channels != out_channels or stride != 1:
            self.shortcut = ConvNorm(in_channels, out_channels, 1, stride=stride)
        else:
            self.shortcut = None
        self.conv1 = ConvNorm(in_channels, bottleneck_channels, 1)
        self.conv2 = ConvNorm(bottleneck_channels, bottleneck_channels, 3, stride=stride)
        self.conv3 = ConvNorm(bottleneck_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        # In place on fresh outputs (no autograd function saves them): no extra activation-sized
        # allocations, which cost as much as the ReLU itself on the CPU.
        out = self.conv1(x).relu_()
        out = self.conv2(out).relu_()
        out = self.conv3(out)
        identity = self.shortcut(x) if self.shortcut is not None else x
        return out.add_(identity).relu_()


class ResNet(nn.Module):
    """ResNet with frozen BN returning the requested stages.

    Args:
        depth: 50 or 101.
        out_features: names among ``res2..res5`` to return.
        freeze_at: 0 trains everything; 1 freezes the stem; k freezes the stem and ``res2..res{k}``.
        stem_out_channels: stem width.
        res2_out_channels: output channels of res2 (doubles per stage).
        num_blocks: bottleneck blocks per stage, overriding the ``depth`` preset (small models).

    Shapes:
        input [B, 3, H, W] normalised image; output ``{name: [B, C_name, H / s, W / s]}`` with strides
        4, 8, 16, 32 for res2..res5.
    """

    _DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}

    def __init__(
        self,
        *,
        depth: int = 50,
        out_features: Sequence[str] = ("res3", "res4", "res5"),
        freeze_at: int = 1,
        stem_out_channels: int = 64,
        res2_out_channels: int = 256,
        num_blocks: Sequence[int] | None = None,
    ):
        super().__init__()
        if num_blocks is None and depth not in self._DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(self._DEPTHS)}, got {depth}")
        self.out_features = tuple(out_features)
        self.stem = BasicStem(3, stem_out_channels)
        in_ch, out_ch, bottleneck = stem_out_channels, res2_out_channels, res2_out_channels // 4
        self.stage_names = []
        self._out_channels: dict[str, int] = {}
        self._strides: dict[str, int] = {}
        stages = tuple(num_blocks) if num_blocks is not None else self._DEPTHS[depth]
        if len(stages) != 4 or min(stages) < 1:
            raise ValueError(f"ResNet num_blocks must be 4 positive counts, got {stages}")
        for idx, n_blocks in enumerate(stages):
            name = f"res{idx + 2}"
            first_stride = 1 if idx == 0 else 2
            blocks = []
            for b in range(n_blocks):
                blocks.append(
                    BottleneckBlock(in_ch, out_ch, bottleneck, first_stride if b == 0 else 1)
                )
                in_ch = out_ch
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            self._out_channels[name] = out_ch
            self._strides[name] = 4 * 2**idx
            out_ch, bottleneck = out_ch * 2, bottleneck * 2
        for f in self.out_features:
            if f not in self._out_channels:
                raise ValueError(f"ResNet out_features: unknown stage '{f}' (valid: res2..res5)")
        self.freeze(freeze_at)

    @property
    def out_channels(self) -> dict[str, int]:
        return {f: self._out_channels[f] for f in self.out_features}

    @property
    def strides(self) -> dict[str, int]:
        return {f: self._strides[f] for f in self.out_features}

    def freeze(self, freeze_at: int) -> None:
        """Stop gradients of the stem (``freeze_at >= 1``) and of ``res2..res{freeze_at}``."""
        modules = [self.stem] + [getattr(self, n) for n in self.stage_names]
        for module in modules[:freeze_at]:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ResNet expects [B, 3, H, W] images, got {tuple(x.shape)}")
        out = {}
        x = self.stem(x)
        last = max(self.stage_names.index(f) for f in self.out_features)
        for name in self.stage_names[: last + 1]:
            x = getattr(self, name)(x)
            if name in self.out_features:
                out[name] = x
        return out
