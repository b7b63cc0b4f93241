"""What a benchmark needs to say about the machine and the work: CPU/GPU model and ISA, the measured
GEMM rate for a dtype, FLOPs of a call, and interleaved median timings.

The GEMM rate is what this machine reaches on a large square matmul in the given dtype and thread
count, measured in the same run; ``flops / rate`` is then the time a call would take if every FLOP
ran at GEMM speed (the GEMM-bound floor), and ``floor / measured`` the fraction of it reached.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

# ISA flags of /proc/cpuinfo that decide the speed of fp32/bf16/fp16 matrix code on x86 CPUs.
ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "avx512_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_fp16",
    "amx_int8",
)
# Side of the square GEMM that measures the rate (large enough to reach the machine's peak).
GEMM_SIZE = {"cpu": 2048, "cuda": 8192}
QUICK_GEMM_SIZE = 256


def cpu_info() -> tuple[str, list[str]]:
    """The CPU model name and which of :data:`ISA_FLAGS` it has (Linux; else the platform name)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return platform.processor() or platform.machine(), []
    name, flags = platform.machine(), set()
    for line in cpuinfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name == platform.machine():
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return name, [f for f in ISA_FLAGS if f in flags]


def has_amx() -> bool:
    """True when the CPU has AMX tiles with bf16 (the matrix units that make bf16 fast on CPU)."""
    return "amx_bf16" in cpu_info()[1]


def machine_line(device: torch.device) -> str:
    """One line naming the machine: CPU model, ISA flags, torch build, threads and load, GPU."""
    name, flags = cpu_info()
    capability = torch.backends.cpu.get_cpu_capability()
    line = (
        f"CPU {name} ({os.cpu_count()} logical cores), ISA {' '.join(flags) or 'n/a'}, "
        f"AMX {'yes' if 'amx_bf16' in flags else 'no'}, torch {torch.__version__} "
        f"(kernels {capability}), {torch.get_num_threads()} threads"
    )
    if hasattr(os, "getloadavg"):
        line += f", load average {os.getloadavg()[0]:.1f}"
    if device.type == "cuda":
        line += f"; GPU {torch.cuda.get_device_name(device)}"
    return line


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_rate(device: torch.device, dtype: torch.dtype, size: int | None = None) -> float:
    """Measured FLOP/s of a ``size`` x ``size`` matmul in ``dtype`` (median of 3 after a warm-up)."""
    n = size or GEMM_SIZE.get(device.type, GEMM_SIZE["cpu"])
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device=device, dtype=dtype) for _ in range(2))
    times = interleaved_medians({"gemm": lambda: a @ b}, device, warmup=1, runs=3)
    return 2 * n**3 / times["gemm"]


def count_flops(fn: Callable[[], object], *modules: torch.nn.Module) -> int:
    """FLOPs of one call, counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
    convolutions; gathers, elementwise ops and Triton kernels count zero).

    The parameters of ``modules`` stop requiring gradients during the count: the counter's module
    tracker fails on a parameter passed as a module input under ``no_grad`` (torch 2.x).
    """
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
    finally:
        for p in params:
            p.requires_grad_(True)
    return counter.get_total_flops()


def interleaved_medians(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, runs: int
) -> dict[str, float]:
    """Median seconds of every function, timed in interleaved rounds (one call of each per round),
    so a change of machine load during the run affects all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}
