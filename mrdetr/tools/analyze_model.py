"""Parameters per module and FLOPs (``torch.utils.flop_counter``) of the primary inference route.

    python tools/analyze_model.py --config-file CFG [--tasks parameter flop] [--depth 2] \
        [--height 800 --width 1216] [--opts key=value ...]

FLOPs are counted on one random image of the given size through ``MrDETR.forward_raw`` (what runs at
inference) by ``torch.utils.flop_counter.FlopCounterMode``, which counts a multiply-add as 2 FLOPs;
the tool prints both FLOPs and multiply-adds (fvcore and most detection papers report
multiply-adds under the name "FLOPs"). Counted: convolutions, matrix products (linear layers,
``bmm``), scaled-dot-product attention (also its CPU kernel, which torch has no formula for) and
deformable attention. Deformable attention is counted through its gather-path decomposition
(:mod:`mrdetr.ops.msda.gather`, the backend used for the count whatever the config selects): its
one weighted ``embedding_bag`` sums 4 bilinear corners x L levels x P points rows of D channels per
(image, query, head), one multiply-add per gathered element. Elementwise ops, normalisation,
softmax, pooling and resizing are not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

__all__ = ["FlopCount", "build_parser", "count_flops", "main", "measure_flops", "parameter_table"]

DEFAULT_HEIGHT = 800
DEFAULT_WIDTH = 1216
_GIGA = 1e9
_MEGA = 1e6
_FLOPS_PER_MULTIPLY_ADD = 2
_GATHER_BACKEND = "cpu"  # the MSDA backend whose decomposition is counted (runs on any device)
_aten = torch.ops.aten


def _shape(x: torch.Tensor | torch.Size) -> tuple[int, ...]:
    """A tensor's shape, or the shape itself (the counter passes shapes or tensors by version)."""
    return tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(x)


def _embedding_bag_flops(weight, indices, *args, **kwargs) -> int:
    """One multiply-add per gathered element: ``indices.numel()`` rows of ``weight.shape[1]``."""
    return _FLOPS_PER_MULTIPLY_ADD * math.prod(_shape(indices)) * _shape(weight)[1]


def _cpu_sdpa_flops(query, key, value, *args, **kwargs) -> int:
    """The formula torch uses for its CUDA attention kernels, for the CPU kernel."""
    return sdpa_flop_count(_shape(query), _shape(key), _shape(value))


_EMBEDDING_BAG_OPS = (_aten._embedding_bag, _aten._embedding_bag_forward_only)
_CUSTOM_FORMULAS: dict[Any, Callable[..., int]] = {
    **dict.fromkeys(_EMBEDDING_BAG_OPS, _embedding_bag_flops),
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
}


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one call, a multiply-add counting 2.

    Attributes:
        total: all counted FLOPs.
        by_module: FLOPs per submodule name (relative to the root module, ``""`` = the root).
        deformable_attention: the part spent sampling values in deformable attention.
    """

    total: int
    by_module: dict[str, int]
    deformable_attention: int

    @property
    def multiply_adds(self) -> int:
        """``total`` in multiply-adds (every counted op is a sum of products)."""
        return self.total // _FLOPS_PER_MULTIPLY_ADD


@contextlib.contextmanager
def _counting_setup(root: nn.Module) -> Iterator[None]:
    """Frozen parameters and the gather MSDA backend, both restored on exit.

    Under ``no_grad`` the counter's module tracker fails on a module input that requires a
    gradient but has no autograd history (a parameter passed to a submodule).
    """
    from ..ops.msda import MultiScaleDeformableAttention

    params = [p for p in root.parameters() if p.requires_grad]
    attention = [m for m in root.modules() if isinstance(m, MultiScaleDeformableAttention)]
    backends = [m.backend for m in attention]
    for p in params:
        p.requires_grad_(False)
    for m in attention:
        m.backend = _GATHER_BACKEND
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
        for m, backend in zip(attention, backends):
            m.backend = backend


def measure_flops(fn: Callable[[], object], root: nn.Module) -> FlopCount:
    """Count the FLOPs of ``fn()`` (run once under ``no_grad``), attributed to ``root``'s modules."""
    counter = FlopCounterMode(display=False, custom_mapping=_CUSTOM_FORMULAS)
    with _counting_setup(root), torch.no_grad(), counter:
        fn()
    prefix = type(root).__name__
    by_module = {}
    for name, per_op in counter.get_flop_counts().items():
        if name == prefix or name.startswith(prefix + "."):
            by_module[name[len(prefix) + 1 :]] = sum(per_op.values())
    global_counts = counter.get_flop_counts().get("Global", {})
    deformable = sum(global_counts.get(op, 0) for op in _EMBEDDING_BAG_OPS)
    return FlopCount(counter.get_total_flops(), by_module, deformable)


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


def _module_flops(name: str, counted: dict[str, int]) -> int:
    """FLOPs of module ``name``: its own count, or (a module whose methods run instead of its
    ``forward``, e.g. ``transformer.decode``) the sum over its outermost counted submodules."""
    if name in counted:
        return counted[name]
    inside = [k for k in counted if k.startswith(name + ".")]
    outermost = [k for k in inside if not any(k.startswith(o + ".") for o in inside)]
    return sum(counted[k] for k in outermost)


def count_flops(model: nn.Module, height: int, width: int, depth: int = 2) -> FlopCount:
    """FLOPs of the primary route of a ``MrDETR`` on one image [1, 3, height, width].

    ``by_module`` holds the model's submodules of at most ``depth`` name parts that ran
    (``""`` = the whole model).
    """
    from ..export.onnx import PrimaryRouteExport

    wrapper = PrimaryRouteExport(model.eval()).eval()
    image = torch.rand(1, 3, height, width, device=next(model.parameters()).device) * 255.0
    count = measure_flops(lambda: wrapper(image), wrapper)
    counted = {
        k.removeprefix("model."): v for k, v in count.by_module.items() if k.startswith("model.")
    }
    by_module = {
        name: _module_flops(name, counted)
        for name, _ in model.named_modules()
        if name and name.count(".") < depth
    }
    by_module = {k: v for k, v in by_module.items() if v}
    by_module[""] = count.total  # forward_raw is not a module call: the whole model by hand
    return FlopCount(count.total, by_module, count.deformable_attention)


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
    from ..config import instantiate
    from ..engine.predictor import load_config

    cfg = load_config(args.config_file, args.opts)
    model = instantiate(cfg.model).to(torch.device("cpu")).eval()
    if "parameter" in args.tasks:
        print(f"{'module':<50} {'params (M)':>12} {'trainable (M)':>14}")
        for name, n, trainable in parameter_table(model, args.depth):
            print(f"{name or '(total)':<50} {n / _MEGA:>12.3f} {trainable / _MEGA:>14.3f}")
    if "flop" in args.tasks:
        count = count_flops(model, args.height, args.width, args.depth)
        print(
            f"\nprimary route at 1x3x{args.height}x{args.width}: {count.total / _GIGA:.3f} GFLOPs "
            f"= {count.multiply_adds / _GIGA:.3f} G multiply-adds (a multiply-add counts 2 FLOPs), "
            f"of which deformable-attention sampling {count.deformable_attention / _GIGA:.3f} GFLOPs"
        )
        print(f"{'module':<50} {'GFLOPs':>10} {'G mult-adds':>12}")
        for name, flops in sorted(count.by_module.items()):
            print(
                f"{name or '(total)':<50} {flops / _GIGA:>10.3f} "
                f"{flops / _FLOPS_PER_MULTIPLY_ADD / _GIGA:>12.3f}"
            )
        print("not counted: elementwise ops, normalisation, softmax, pooling, resizing")
    return 0


if __name__ == "__main__":
    from ._cli import run_cli

    raise SystemExit(run_cli(main))
