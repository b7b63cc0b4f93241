"""Inference speed of a model (images/s and latency at batch 1 and N) or of the test data loader.

    python tools/benchmark.py --config-file CFG [--batch-size 4] [--iters 20 --warmup 5] \
        [--height 800 --width 1216] [--opts train.init_checkpoint=... train.device=cuda]
    python tools/benchmark.py --config-file CFG --data-only [--iters 100]
    python tools/benchmark.py --config-file CFG --backends pytorch onnxruntime openvino \
        [--images 4] [--openvino-precisions f32 bf16] [--onnx-path model.onnx] [--quick]

Model mode times ``model(inputs)`` (eval, primary route + post-processing) on random images of one
size, synchronising CUDA around every call. ``--data-only`` iterates ``cfg.dataloader.test``.
``--backends`` compares PyTorch with the exported graph in ONNX Runtime and OpenVINO on the CPU, on
the same images, with ratios against PyTorch (:mod:`mrdetr.tools._benchmark_backends`); ``--quick``
is a bounded run (64x96 images, 2 images, 2 rounds) that checks the tool.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

__all__ = ["build_parser", "main", "time_calls"]

DEFAULT_HEIGHT = 800
DEFAULT_WIDTH = 1216
QUICK = {"height": 64, "width": 96, "images": 2, "iters": 2, "warmup": 1}
_MS = 1000.0


def time_calls(
    fn: Callable[[], object], iters: int, warmup: int, sync: Callable[[], None]
) -> list[float]:
    """Seconds per call of ``fn`` over ``iters`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _report(label: str, times: list[float], images_per_call: int) -> None:
    mean = statistics.fmean(times)
    print(
        f"{label}: {images_per_call / mean:.2f} images/s, latency {mean * _MS:.1f} ms/call "
        f"(median {statistics.median(times) * _MS:.1f} ms, {len(times)} calls of {images_per_call})"
    )


def _benchmark_data(cfg, iters: int, warmup: int) -> None:
    from ..config import instantiate

    loader_cfg = cfg.get("dataloader", {}).get("test", None) if "dataloader" in cfg else None
    if loader_cfg is None:
        raise KeyError("--data-only needs 'dataloader.test' in the config")
    loader = iter(instantiate(loader_cfg))
    counts: list[int] = []

    def step() -> None:
        counts.append(len(next(loader)))

    try:
        times = time_calls(step, iters, warmup, lambda: None)
    except StopIteration:
        raise ValueError("the test loader has fewer batches than --warmup + --iters") from None
    _report("data loader", times, max(1, round(statistics.fmean(counts[warmup:]))))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--batch-size", type=int, default=4, help="N of the batched measurement")
    p.add_argument("--iters", type=int, default=20, help="timed calls")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    p.add_argument("--height", type=int, default=None, help=f"default {DEFAULT_HEIGHT}")
    p.add_argument("--width", type=int, default=None, help=f"default {DEFAULT_WIDTH}")
    p.add_argument("--data-only", action="store_true", help="time the test data loader only")
    p.add_argument(
        "--backends",
        nargs="+",
        choices=("pytorch", "onnxruntime", "openvino"),
        help="compare these backends on the CPU (batch 1, ratios against pytorch)",
    )
    p.add_argument("--images", type=int, default=4, help="--backends: images per round")
    p.add_argument("--onnx-path", default=None, help="--backends: a --postprocess ONNX file")
    p.add_argument(
        "--openvino-precisions",
        nargs="+",
        default=["f32"],
        choices=("f32", "bf16", "f16"),
        help="--backends: OpenVINO INFERENCE_PRECISION_HINT values to run",
    )
    p.add_argument("--quick", action="store_true", help="a bounded run that checks the tool")
    p.add_argument("--opts", nargs="*", default=[], help="config overrides key=value ...")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if key in ("height", "width") and getattr(args, key) is not None:
                continue
            setattr(args, key, value)
    args.height = DEFAULT_HEIGHT if args.height is None else args.height
    args.width = DEFAULT_WIDTH if args.width is None else args.width
    if args.iters < 1 or args.warmup < 0 or args.batch_size < 1 or args.images < 1:
        raise ValueError("need --iters >= 1, --warmup >= 0, --batch-size >= 1 and --images >= 1")
    import torch

    from ..config.access import get_dotted
    from ..engine.defaults import resolve_device
    from ..engine.predictor import build_predictor_model, load_config

    cfg = load_config(args.config_file, args.opts)
    if args.data_only:
        _benchmark_data(cfg, args.iters, args.warmup)
        return 0
    weights = get_dotted(cfg, "train.init_checkpoint", "") or None
    if args.backends:
        from ._benchmark_backends import benchmark_backends

        benchmark_backends(
            build_predictor_model(cfg, weights, torch.device("cpu")),
            args.backends,
            height=args.height,
            width=args.width,
            num_images=args.images,
            rounds=args.iters,
            warmup=args.warmup,
            onnx_path=args.onnx_path,
            openvino_precisions=args.openvino_precisions,
        )
        return 0
    device = resolve_device(str(cfg.train.get("device", "auto")) if "train" in cfg else "auto")
    model = build_predictor_model(cfg, weights, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"device: {device}, input 3x{args.height}x{args.width}")
    for batch in sorted({1, args.batch_size}):
        images = [
            torch.rand(3, args.height, args.width, device=device) * 255.0 for _ in range(batch)
        ]
        inputs = [{"image": im} for im in images]
        with torch.no_grad():
            times = time_calls(lambda inputs=inputs: model(inputs), args.iters, args.warmup, sync)
        _report(f"batch {batch}", times, batch)
    return 0


if __name__ == "__main__":
    from ._cli import run_cli

    raise SystemExit(run_cli(main))
