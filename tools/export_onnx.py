#!/usr/bin/env python
"""Export the primary route of a Mr. DETR model to ONNX and check it with onnxruntime.

A thin wrapper over :mod:`mrdetr.tools.export_onnx` (``--help`` lists every flag).
"""

from __future__ import annotations

from mrdetr.tools._cli import run_cli
from mrdetr.tools.export_onnx import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
