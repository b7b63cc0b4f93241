"""Small feed-forward blocks."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..utils.tracing import is_exporting

# Elements of the [rows, hidden] activation of one FFN pass without autograd (8 MB in float32): the
# rows are run in chunks of this size, so the activation is reused from the heap instead of being
# a fresh allocation above glibc's mmap threshold (32 MB at most) that page-faults on every call
# (measured on the R50 encoder, 5,440 tokens x 2,048 hidden: 160 -> 133 ms a layer at 1 thread).
_NO_GRAD_CHUNK_ELEMENTS = 1 << 21


class MLP(nn.Module):
    """Multi-layer perceptron with ReLU between layers (box heads).

    Args:
        input_dim: input channels.
        hidden_dim: hidden channels.
        output_dim: output channels.
        num_layers: number of Linear layers.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: Tensor) -> Tensor:
        """[..., input_dim] -> [..., output_dim]."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class FFN(nn.Module):
    """Transformer feed-forward block ``fc2(dropout(relu(fc1(x))))`` without residual or norm.

    Args:
        embed_dim: input/output channels.
        hidden_dim: hidden channels.
        dropout: dropout after the activation and after ``fc2``.
    """

    def __init__(self, *, embed_dim: int = 256, hidden_dim: int = 2048, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """[..., embed_dim] -> [..., embed_dim]."""
        rows = max(1, _NO_GRAD_CHUNK_ELEMENTS // self.fc1.out_features)
        if (
            torch.is_grad_enabled()
            or is_exporting()  # a traced graph would bake in this input's chunks
            or torch.compiler.is_compiling()  # the compiler fuses the block itself
            or x[..., 0].numel() <= rows
        ):
            return self._block(x)
        # No autograd (eval): the same rows in chunks (row results do not depend on other rows)
        flat = x.reshape(-1, x.shape[-1])
        out = torch.cat([self._block(chunk) for chunk in flat.split(rows)])
        return out.view(*x.shape[:-1], out.shape[-1])

    def _block(self, x: Tensor) -> Tensor:
        # relu_ in place on fc1's fresh output (its backward does not need it): one [..., hidden]
        # tensor fewer per call
        return self.dropout(self.fc2(self.dropout(self.fc1(x).relu_())))
