"""Frozen batch norm that keeps the dtype of its input (bf16 activations stay bf16 under autocast)."""

from __future__ import annotations

from torch import Tensor
from torchvision.ops import misc

__all__ = ["FrozenBatchNorm2d"]


class FrozenBatchNorm2d(misc.FrozenBatchNorm2d):
    """``torchvision.ops.misc.FrozenBatchNorm2d`` whose output has the input's dtype.

    The per-channel scale and shift are computed from the float32 buffers exactly as torchvision
    computes them, then cast to the input's dtype (a no-op for float32 inputs, so float32 results
    are bit-identical). torchvision's version multiplies a bf16 conv output by float32 buffers, which
    promotes every ResNet activation to float32 under autocast: the ReLU and residual adds then run
    in float32 and the next convolution casts its input back to bf16.

    Buffers and state-dict keys are torchvision's.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``x * scale + shift`` per channel; x: [B, C, H, W] -> same shape and dtype."""
        scale = (
            self.weight.reshape(1, -1, 1, 1)
            * (self.running_var.reshape(1, -1, 1, 1) + self.eps).rsqrt()
        )
        shift = self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale
        # add_ on the product (autograd does not need it): one activation-sized tensor per call
        return (x * scale.to(x.dtype)).add_(shift.to(x.dtype))
