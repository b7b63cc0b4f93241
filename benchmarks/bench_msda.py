"""Benchmark the multi-scale deformable attention backends against the reference in the same run.

Times forward and forward+backward (median of ``--repeats`` runs after one warm-up) of the
``reference`` (per-level grid_sample), ``cpu`` (gather) and, with CUDA, ``triton`` backends on the
Mr. DETR shapes (8 heads x 32 channels, 4 levels, 4 points, batch 1):

- ``encoder``: 800x1333-like input, levels 100x167, 50x84, 25x42, 13x21 = 22,223 tokens, queries = tokens;
- ``encoder_320x480``: the 320x480 test image, levels 40x60, 20x30, 10x15, 5x8 = 3,190 tokens;
- ``decoder_300`` / ``decoder_900``: 300 / 900 queries over the 22,223 encoder tokens.

It prints a table with speed-ups over the reference (>1 = faster), peak memory (CPU: peak RSS above
the inputs, Linux only; CUDA: peak allocated) and, on CUDA, the fraction of the memory-bound floor
reached (bytes that must move / ``--bandwidth``, divided by the measured time).

Usage::

    python benchmarks/bench_msda.py --threads 2 --repeats 3
    python benchmarks/bench_msda.py --device cuda --backends reference cpu triton
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mrdetr.ops.msda import multi_scale_deformable_attention

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_line  # noqa: E402  (benchmarks/ is not a package)

ENCODER_LEVELS = [(100, 167), (50, 84), (25, 42), (13, 21)]
SMALL_LEVELS = [(40, 60), (20, 30), (10, 15), (5, 8)]
SHAPES = {  # name: (levels, queries; None = one query per token)
    "encoder": (ENCODER_LEVELS, None),
    "encoder_320x480": (SMALL_LEVELS, None),
    "decoder_300": (ENCODER_LEVELS, 300),
    "decoder_900": (ENCODER_LEVELS, 900),
}
H100_BANDWIDTH = 3.35e12  # bytes/s (H100 SXM HBM3)


def make_inputs(levels, queries, *, heads, head_dim, points, batch, device, dtype, uniform, seed=0):
    """Op inputs; points scatter around a reference point (or uniformly with ``uniform``)."""
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(levels, dtype=torch.int64)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    tokens, num_levels = int(areas.sum()), len(levels)
    queries = tokens if queries is None else queries
    value = torch.randn(batch, tokens, heads, head_dim, generator=g)
    if uniform:
        locations = torch.rand(batch, queries, heads, num_levels, points, 2, generator=g)
    else:
        reference = torch.rand(batch, queries, 1, 1, 1, 2, generator=g)
        pixel = (1.0 / shapes.flip(-1).float()).view(1, 1, 1, num_levels, 1, 2)
        offsets = torch.randn(batch, queries, heads, num_levels, points, 2, generator=g) * 2 * pixel
        locations = reference + offsets
    logits = torch.randn(batch, queries, heads, num_levels * points, generator=g)
    weights = logits.softmax(-1).view(batch, queries, heads, num_levels, points)
    tensors = [t.to(device=device, dtype=dtype) for t in (value, locations, weights)]
    return tensors[0], shapes.to(device), starts.to(device), tensors[1], tensors[2]


def moved_bytes(value, locations, weights, backward: bool) -> int:
    """Bytes a perfect kernel must move: read every input once and write every output once."""
    out = (
        value.shape[0] * locations.shape[1] * value.shape[2] * value.shape[3] * value.element_size()
    )
    io = sum(t.numel() * t.element_size() for t in (value, locations, weights)) + out
    if backward:  # + read grad_out, read-modify-write the float32 value grad, write the other grads
        io += out + 2 * value.numel() * 4 + locations.numel() * 4 + weights.numel() * 4
    return io


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or peak RSS on Linux (None if unavailable)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb: float | None = None
        self._libc = None
        if device.type == "cpu" and Path("/proc/self/clear_refs").exists():
            try:
                self._libc = ctypes.CDLL("libc.so.6")
            except OSError:
                self._libc = None

    @staticmethod
    def _status_mb(key: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
        raise KeyError(key)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif self._libc is not None:
            self._libc.malloc_trim(0)  # return freed memory so the peak starts from what is live
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM)
            self._base = self._status_mb("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._libc is not None:
            self.peak_mb = self._status_mb("VmHWM") - self._base


def measure(
    fn: Callable[[], None], device: torch.device, repeats: int
) -> tuple[float, float | None]:
    """Median seconds over ``repeats`` runs after one warm-up, and the peak memory of one run."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    with PeakMemory(device) as peak:
        fn()
        sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak.peak_mb


def bench_shape(name: str, args: argparse.Namespace) -> list[dict]:
    levels, queries = SHAPES[name]
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    value, shapes, starts, locations, weights = make_inputs(
        levels, queries, heads=args.heads, head_dim=args.head_dim, points=args.points,
        batch=args.batch, device=device, dtype=dtype, uniform=args.uniform,
    )  # fmt: skip
    leaves = [t.clone().requires_grad_() for t in (value, locations, weights)]
    grad_out = torch.randn(
        value.shape[0],
        locations.shape[1],
        value.shape[2] * value.shape[3],
        device=device,
        dtype=dtype,
    )
    rows = []
    for backend in args.backends:

        def forward(b=backend):
            with torch.no_grad():
                multi_scale_deformable_attention(
                    value, shapes, starts, locations, weights, backend=b
                )

        def forward_backward(b=backend):
            for leaf in leaves:
                leaf.grad = None
            out = multi_scale_deformable_attention(
                leaves[0], shapes, starts, leaves[1], leaves[2], backend=b
            )
            out.backward(grad_out)

        try:
            fwd, fwd_mem = measure(forward, device, args.repeats)
            fb, fb_mem = measure(forward_backward, device, args.repeats)
        except RuntimeError as error:  # a backend that cannot run here (e.g. triton on CPU)
            print(f"  {name}: {backend} skipped: {error}")
            continue
        rows.append(dict(shape=name, backend=backend, fwd=fwd, fb=fb, fwd_mem=fwd_mem, fb_mem=fb_mem,
                         fwd_bytes=moved_bytes(value, locations, weights, False),
                         fb_bytes=moved_bytes(value, locations, weights, True)))  # fmt: skip
    return rows


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    cuda = args.device.startswith("cuda")
    header = f"{'shape':<16} {'backend':<10} {'fwd ms':>9} {'x ref':>6} {'fwd+bwd ms':>11} {'x ref':>6} {'peak MB fwd':>12} {'peak MB f+b':>12}"
    if cuda:
        header += f" {'floor% fwd':>10} {'floor% f+b':>10}"
    print(header)
    print("-" * len(header))
    fmt_mem = lambda m: f"{m:12.0f}" if m is not None else f"{'n/a':>12}"  # noqa: E731
    for row in rows:
        ref = next(
            (r for r in rows if r["shape"] == row["shape"] and r["backend"] == "reference"), None
        )
        fwd_x = f"{ref['fwd'] / row['fwd']:6.2f}" if ref else f"{'-':>6}"
        fb_x = f"{ref['fb'] / row['fb']:6.2f}" if ref else f"{'-':>6}"
        line = (
            f"{row['shape']:<16} {row['backend']:<10} {row['fwd'] * 1e3:9.1f} {fwd_x} {row['fb'] * 1e3:11.1f} "
            f"{fb_x} {fmt_mem(row['fwd_mem'])} {fmt_mem(row['fb_mem'])}"
        )
        if cuda:
            floor_fwd = row["fwd_bytes"] / args.bandwidth / row["fwd"] * 100
            floor_fb = row["fb_bytes"] / args.bandwidth / row["fb"] * 100
            line += f" {floor_fwd:10.1f} {floor_fb:10.1f}"
        print(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (e.g. 2)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per measurement (median)"
    )
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument(
        "--backends", nargs="+", default=None, help="default: reference cpu (+ triton on CUDA)"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument(
        "--uniform", action="store_true", help="uniform random locations (no locality)"
    )
    parser.add_argument(
        "--bandwidth", type=float, default=H100_BANDWIDTH, help="device bytes/s for the floor"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.backends is None:
        args.backends = ["reference", "cpu"] + (
            ["triton"] if args.device.startswith("cuda") else []
        )
    print(machine_line(torch.device(args.device)))
    print(
        f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
        f"dtype {args.dtype}, batch {args.batch}, {args.heads} heads x {args.head_dim} ch, {args.points} points, "
        f"median of {args.repeats}"
    )
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = []
    for name in args.shapes:
        rows += bench_shape(name, args)
    print_table(rows, args)
    if load_before is not None:  # other processes on the CPU distort multi-thread timings
        print(f"load average (1 min) before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
