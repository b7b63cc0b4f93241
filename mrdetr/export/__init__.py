"""Model export: ONNX of the primary inference route (``export_onnx``) and the runtimes that run it
behind the model's interface (``ExportedModel``: ONNX Runtime, OpenVINO)."""

from __future__ import annotations

from .onnx import ExportReport, PrimaryRouteExport, export_onnx, verify_onnx
from .runtime import ExportedModel, cached_onnx, load_exported_model

__all__ = [
    "ExportReport",
    "ExportedModel",
    "PrimaryRouteExport",
    "cached_onnx",
    "export_onnx",
    "load_exported_model",
    "verify_onnx",
]
