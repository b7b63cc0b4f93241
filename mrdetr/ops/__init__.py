"""Custom operators with a pure-PyTorch reference and faster backends."""

from .msda import MSDA_BACKENDS, MultiScaleDeformableAttention, multi_scale_deformable_attention

__all__ = ["MSDA_BACKENDS", "MultiScaleDeformableAttention", "multi_scale_deformable_attention"]
