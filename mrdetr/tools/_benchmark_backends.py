"""``mrdetr-benchmark --backends ...``: PyTorch, ONNX Runtime and OpenVINO on the same images.

Every backend gets the same N random images of one size (already resized, the model's input) one
at a time (batch 1), through the interface the Predictor uses (``model(batched_inputs)`` ->
``Instances`` in the input's size). Rounds are interleaved (one pass over the images per backend
per round) so that a change of machine load hits every backend alike; the median pass gives the
per-image latency, and each backend's ratio is its latency over PyTorch's in the same run. The
exported backends share one ONNX file (dynamic shapes, post-processing in the graph; ``--onnx-path``
or exported into the cache, :func:`mrdetr.export.runtime.cached_onnx`) and PyTorch's thread count.
OpenVINO runs once per ``--openvino-precisions`` entry; a row whose compiled model reports another
precision than the one asked names both (a CPU without bf16 instructions runs f32).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["BackendTiming", "benchmark_backends"]

_MS = 1000.0


@dataclass
class BackendTiming:
    """One row of the comparison.

    Attributes:
        name: ``pytorch``, ``onnxruntime`` or ``openvino-<precision asked>``, followed by
            ``(<precision used>)`` where the compiled model reports another one.
        ms_per_image: median over rounds of the mean latency per image, in ms.
        ratio: ``ms_per_image`` over PyTorch's (None without a PyTorch row).
        max_score_diff: largest |score - PyTorch score| between the sorted detection scores of
            each image (None for PyTorch itself or without a PyTorch row).
    """

    name: str
    ms_per_image: float
    ratio: float | None = None
    max_score_diff: float | None = None


def _cpu_has_amx() -> bool:
    from ..engine.precision import _cpu_has_amx as has_amx

    return has_amx()


def _build_runners(
    model: torch.nn.Module,
    backends: Sequence[str],
    onnx_path: str | None,
    trace_size: tuple[int, int],
    precisions: Sequence[str],
) -> dict[str, Callable[[list[dict]], list[dict]]]:
    from ..export.runtime import ExportedModel, cached_onnx, require_package

    runners: dict[str, Callable[[list[dict]], list[dict]]] = {}
    exported = [b for b in backends if b != "pytorch"]
    for backend in exported:
        require_package(backend)
    if exported and onnx_path is None:
        onnx_path = str(cached_onnx(model, height=trace_size[0], width=trace_size[1]))
    threads = torch.get_num_threads()
    for backend in backends:
        if backend == "pytorch":
            runners["pytorch"] = model
        elif backend == "onnxruntime":
            runners["onnxruntime"] = ExportedModel(backend, onnx_path, num_threads=threads)
        else:
            for precision in precisions:
                runner = ExportedModel(backend, onnx_path, precision=precision, num_threads=threads)
                name = f"openvino-{precision}"
                if runner.precision != precision:  # the plugin chose another precision
                    name += f"({runner.precision})"
                runners[name] = runner
    return runners


def _top_scores(outputs: list[dict]) -> torch.Tensor:
    return outputs[0]["instances"].scores.float().sort(descending=True).values


def benchmark_backends(
    model: torch.nn.Module,
    backends: Sequence[str],
    *,
    height: int,
    width: int,
    num_images: int,
    rounds: int,
    warmup: int,
    onnx_path: str | None = None,
    openvino_precisions: Sequence[str] = ("f32",),
    seed: int = 0,
) -> list[BackendTiming]:
    """Time every backend on the same images; print the machine line, a table and return it.

    Args:
        model: a ``MrDETR`` on the CPU in eval mode.
        backends: names among ``pytorch``, ``onnxruntime``, ``openvino``.
        height: image height (the model's input, already resized).
        width: image width.
        num_images: images per pass.
        rounds: timed passes per backend (interleaved).
        warmup: untimed passes per backend first.
        onnx_path: a post-processed ONNX file, or None to export the model into the cache.
        openvino_precisions: OpenVINO inference precisions to run (``f32``, ``bf16``).
        seed: seed of the random images.
    """
    runners = _build_runners(model, backends, onnx_path, (height, width), openvino_precisions)
    g = torch.Generator().manual_seed(seed)
    inputs = [
        [{"image": torch.rand(3, height, width, generator=g) * 255.0}] for _ in range(num_images)
    ]
    times: dict[str, list[float]] = {name: [] for name in runners}
    scores: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for name, run in runners.items():
            scores[name] = [_top_scores(run(batch)) for batch in inputs]
            for _ in range(warmup):
                for batch in inputs:
                    run(batch)
        for _ in range(rounds):
            for name, run in runners.items():
                start = time.perf_counter()
                for batch in inputs:
                    run(batch)
                times[name].append((time.perf_counter() - start) / num_images)
    base = statistics.median(times["pytorch"]) if "pytorch" in times else None
    rows = []
    for name, ts in times.items():
        ms = statistics.median(ts) * _MS
        row = BackendTiming(name, ms)
        if base is not None:
            row.ratio = ms / (base * _MS)
            if name != "pytorch":
                row.max_score_diff = max(
                    float((a[: len(b)] - b[: len(a)]).abs().max()) if len(a) and len(b) else 0.0
                    for a, b in zip(scores[name], scores["pytorch"])
                )
        rows.append(row)
    _print_table(rows, height, width, num_images, rounds)
    return rows


def _print_table(
    rows: list[BackendTiming], height: int, width: int, num_images: int, rounds: int
) -> None:
    print(
        f"backends on {num_images} images of 3x{height}x{width}, batch 1, median of {rounds} "
        f"interleaved rounds, {torch.get_num_threads()} threads; CPU AMX: "
        f"{'yes' if _cpu_has_amx() else 'no'}"
    )
    print(f"{'backend':<16} {'ms/image':>10} {'time/pytorch':>13} {'max |dscore|':>13}")
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
        diff = "" if r.max_score_diff is None else f"{r.max_score_diff:.1e}"
        print(f"{r.name:<16} {r.ms_per_image:>10.1f} {ratio:>13} {diff:>13}")
