"""Task heads beyond the shared class/box heads: the instance-mask head."""

from .mask_head import MaskHeadSmallConv, MHAttentionMap, SegInputProjection

__all__ = ["MHAttentionMap", "MaskHeadSmallConv", "SegInputProjection"]
