#!/usr/bin/env python
"""Run a Mr. DETR model on images, a folder, a video or a webcam and draw the detections.

    python demo/demo.py --config-file CFG --input "imgs/*.jpg" --output out/ \
        --confidence-threshold 0.5 --opts train.init_checkpoint=model.pth train.device=cpu

All logic lives in :mod:`mrdetr.tools.demo` (``--help`` lists every flag).
"""

from __future__ import annotations

from mrdetr.tools._cli import run_cli
from mrdetr.tools.demo import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
