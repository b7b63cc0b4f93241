"""mrdetr: Mr. DETR and Mr. DETR++ detection transformers."""

__version__ = "0.1.0"
