"""Model export: ONNX of the primary inference route (``export_onnx``)."""

from __future__ import annotations

from .onnx import ExportReport, PrimaryRouteExport, export_onnx, verify_onnx

__all__ = ["ExportReport", "PrimaryRouteExport", "export_onnx", "verify_onnx"]
