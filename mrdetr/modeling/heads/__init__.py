"""Task heads beyond the shared class/box heads: the instance-mask heads."""

from .mask_head import MaskHeadSmallConv, MHAttentionMap, SegInputProjection
from .query_mask_head import QueryMaskHead

__all__ = ["MHAttentionMap", "MaskHeadSmallConv", "QueryMaskHead", "SegInputProjection"]
