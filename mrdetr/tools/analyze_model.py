"""Parameters per module and FLOPs (fvcore ``FlopCountAnalysis``) of the primary inference route.

    python tools/analyze_model.py --config-file CFG [--tasks parameter flop] [--depth 2] \
        [--height 800 --width 1216] [--opts key=value ...]

FLOPs are counted on one random image of the given size through ``MrDETR.forward_raw`` (what runs at
inference); fvcore counts one fused multiply-add as one flop. Ops fvcore has no handle for (e.g.
``grid_sample`` inside deformable attention) are listed and not counted.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from torch import nn

__all__ = ["build_parser", "count_flops", "main", "parameter_table"]

DEFAULT_HEIGHT = 800
DEFAULT_WIDTH = 1216
_GIGA = 1e9
_MEGA = 1e6


def parameter_table(model: nn.Module, depth: int = 2) -> list[tuple[str, int, int]]:
    """(module prefix up to ``depth`` dots, #parameters, #trainable) sorted by prefix; row "" = total."""
    total: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, p in model.named_parameters():
        parts = name.split(".")[:-1]
        for d in range(0, min(depth, len(parts)) + 1):
            key = ".".join(parts[:d])
            total[key][0] += p.numel()
            total[key][1] += p.numel() if p.requires_grad else 0
    return [(k, v[0], v[1]) for k, v in sorted(total.items())]


def count_flops(
    model: nn.Module, height: int, width: int, depth: int = 2
) -> tuple[float, dict[str, float], list[str]]:
    """(total flops, flops per module up to ``depth``, unsupported op names) for one image."""
    import torch
    from fvcore.nn import FlopCountAnalysis

    from ..export.onnx import PrimaryRouteExport

    wrapper = PrimaryRouteExport(model.eval()).eval()
    image = torch.rand(1, 3, height, width, device=next(model.parameters()).device) * 255.0
    analysis = FlopCountAnalysis(wrapper, (image,))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_module = {
        k.removeprefix("model."): float(v)
        for k, v in analysis.by_module().items()
        if k.startswith("model.") and k.count(".") <= depth
    }
    return float(analysis.total()), by_module, sorted(analysis.unsupported_ops())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument(
        "--tasks", nargs="+", choices=("parameter", "flop"), default=["parameter", "flop"]
    )
    p.add_argument("--depth", type=int, default=2, help="module depth of the tables")
    p.add_argument("--height", type=int, default=DEFAULT_HEIGHT)
    p.add_argument("--width", type=int, default=DEFAULT_WIDTH)
    p.add_argument("--opts", nargs="*", default=[], help="config overrides key=value ...")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from ..config import instantiate
    from ..engine.predictor import load_config

    cfg = load_config(args.config_file, args.opts)
    model = instantiate(cfg.model).to(torch.device("cpu")).eval()
    if "parameter" in args.tasks:
        print(f"{'module':<50} {'params (M)':>12} {'trainable (M)':>14}")
        for name, n, trainable in parameter_table(model, args.depth):
            print(f"{name or '(total)':<50} {n / _MEGA:>12.3f} {trainable / _MEGA:>14.3f}")
    if "flop" in args.tasks:
        total, by_module, unsupported = count_flops(model, args.height, args.width, args.depth)
        print(
            f"\nFLOPs of the primary route at 1x3x{args.height}x{args.width}: {total / _GIGA:.3f} G"
        )
        for name, flops in sorted(by_module.items()):
            print(f"  {name:<48} {flops / _GIGA:>10.3f} G")
        if unsupported:
            print(f"not counted (no fvcore handle): {', '.join(unsupported)}")
    return 0


if __name__ == "__main__":
    from ._cli import run_cli

    raise SystemExit(run_cli(main))
