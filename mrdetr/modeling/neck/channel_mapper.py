"""ChannelMapper neck: project backbone maps to a common width, plus extra strided levels."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class ConvGN(nn.Module):
    """``conv`` (with bias) followed by ``norm`` (GroupNorm), no activation."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, num_groups: int
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2
        )
        self.norm = nn.GroupNorm(num_groups, out_channels)
        nn.init.xavier_uniform_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


class ChannelMapper(nn.Module):
    """Map each input feature with a 1x1 conv + GN; add ``num_outs - len(in_features)`` 3x3/2 levels.

    The first extra level is computed from the **last backbone feature** (not the mapped one), as in the
    official Deformable-DETR code.

    Args:
        in_channels: channels of each input feature, in ``in_features`` order.
        in_features: names of the backbone outputs to use (fine to coarse).
        out_channels: common width (256).
        num_outs: number of output levels (4 for 4-scale, 5 for 5-scale).
        num_groups: GroupNorm groups.
        kernel_size: kernel of the per-input projection.

    Shapes:
        input ``{name: [B, C_i, H_i, W_i]}``; output list of ``num_outs`` maps [B, out_channels, H_l, W_l].
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        in_features: Sequence[str],
        out_channels: int = 256,
        num_outs: int = 4,
        num_groups: int = 32,
        kernel_size: int = 1,
    ):
        super().__init__()
        if len(in_channels) != len(in_features):
            raise ValueError("ChannelMapper: in_channels and in_features differ in length")
        if num_outs < len(in_features):
            raise ValueError("ChannelMapper: num_outs must be >= the number of input features")
        self.in_features = tuple(in_features)
        self.convs = nn.ModuleList(
            ConvGN(c, out_channels, kernel_size, 1, num_groups) for c in in_channels
        )
        extra = []
        for i in range(num_outs - len(in_features)):
            src = in_channels[-1] if i == 0 else out_channels
            extra.append(ConvGN(src, out_channels, 3, 2, num_groups))
        self.extra_convs = nn.ModuleList(extra)

    def forward(self, features: dict[str, Tensor]) -> list[Tensor]:
        inputs = [features[f] for f in self.in_features]
        outs = [conv(x) for conv, x in zip(self.convs, inputs)]
        for i, conv in enumerate(self.extra_convs):
            outs.append(conv(inputs[-1] if i == 0 else outs[-1]))
        return outs
