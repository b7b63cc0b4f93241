from .mr_detr import MrDETR

__all__ = ["MrDETR"]
