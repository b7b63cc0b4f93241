"""Reusable building blocks."""

from .frozen_batchnorm import FrozenBatchNorm2d
from .mlp import FFN, MLP
from .position_embedding import PositionEmbeddingSine, box_sine_embedding

__all__ = ["FFN", "MLP", "FrozenBatchNorm2d", "PositionEmbeddingSine", "box_sine_embedding"]
