"""Export the primary route of a Mr. DETR model to ONNX and check it with onnxruntime.

    python tools/export_onnx.py --config-file CFG --output model.onnx [--height 800 --width 1216] \
        [--batch-size 1] [--dynamic] [--postprocess] [--opset 17] --opts train.init_checkpoint=model.pth

The graph maps raw images [B, 3, H, W] (0..255, already resized, the model's channel order) to
``pred_logits`` and ``pred_boxes``, or with ``--postprocess`` to the top-K ``scores``, ``labels``
and ``boxes`` (x1y1x2y2 pixels of the input); ``--dynamic`` makes B, H and W free (see
:mod:`mrdetr.export.onnx`). Needs ``pip install mrdetr[export]`` (onnx, onnxruntime).
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

DEFAULT_HEIGHT = 800
DEFAULT_WIDTH = 1216  # an 800-short-side 3:2 image, rounded to a multiple of 32


def build_parser() -> argparse.ArgumentParser:
    from ..export.onnx import DEFAULT_OPSET, DEFAULT_TOLERANCE

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--output", required=True, help="the .onnx file to write (must not exist)")
    p.add_argument("--height", type=int, default=DEFAULT_HEIGHT)
    p.add_argument("--width", type=int, default=DEFAULT_WIDTH)
    p.add_argument("--batch-size", type=int, default=1, help="batch of the export")
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="batch, height and width are dynamic axes (verified at two sizes and batch sizes)",
    )
    p.add_argument(
        "--postprocess",
        action="store_true",
        help="top-K scores, labels and pixel boxes inside the graph",
    )
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="onnxruntime check")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    p.add_argument("--opts", nargs="*", default=[], help="config overrides key=value ...")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import os

    import torch

    from ..config.access import get_dotted
    from ..engine.predictor import build_predictor_model, load_config
    from ..export.onnx import export_onnx

    if os.path.exists(args.output):
        raise FileExistsError(f"output file already exists: {args.output} (refusing to overwrite)")
    cfg = load_config(args.config_file, args.opts)
    weights = get_dotted(cfg, "train.init_checkpoint", "")
    if not weights:
        logger.warning("train.init_checkpoint is empty: exporting freshly initialised weights")
    model = build_predictor_model(cfg, weights or None, torch.device("cpu"))
    report = export_onnx(
        model,
        args.output,
        height=args.height,
        width=args.width,
        batch_size=args.batch_size,
        opset=args.opset,
        dynamic=args.dynamic,
        postprocess=args.postprocess,
        verify=not args.no_verify,
        tolerance=args.tolerance,
    )
    check = "not verified"
    if report.max_abs_diff is not None:
        shapes = ", ".join(str(list(s)) for s in report.checked_shapes)
        check = f"max |ort - torch| = {report.max_abs_diff:.2e} at inputs {shapes}"
    kind = "dynamic" if args.dynamic else "fixed"
    print(f"wrote {report.path} ({kind} input, exported at {list(report.input_shape)}; {check})")
    return 0


if __name__ == "__main__":
    from ._cli import run_cli

    raise SystemExit(run_cli(main))
