"""The Triton backend's first-use self-check: a kernel that disagrees with the reference is not used.

The kernels run in the Triton interpreter (``TRITON_INTERPRET=1``) on CPU tensors, in a subprocess
(this file run as a script) for the reason given in ``tests/test_msda_triton.py``. ``"auto"`` prefers
Triton on CUDA only, so the worker adds the CPU to the device types where ``"auto"`` prefers it; the
rest of the path (self-check, verdict cache, warning, fallback) is the one a GPU takes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# (level sizes, batch, heads, head dim, queries, points): a problem other than the self-check's own
SIZES, BATCH, HEADS, HEAD_DIM, QUERIES, POINTS = [(4, 6), (3, 2)], 1, 2, 8, 7, 2


def _inputs(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(SIZES, dtype=torch.int64)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    value = torch.randn(BATCH, int(areas.sum()), HEADS, HEAD_DIM, generator=g)
    loc = torch.rand(BATCH, QUERIES, HEADS, len(SIZES), POINTS, 2, generator=g) * 1.4 - 0.2
    attn = torch.rand(BATCH, QUERIES, HEADS, len(SIZES), POINTS, generator=g)
    return value, shapes, starts, loc, attn


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _worker() -> dict:
    """Run the scenarios in the interpreter; return what the test asserts on."""
    os.environ["TRITON_INTERPRET"] = "1"
    import mrdetr.ops.msda.dispatch as dispatch
    import mrdetr.ops.msda.triton_kernels as kernels
    from mrdetr.ops.msda import (
        clear_triton_self_check_cache,
        msda_gather,
        msda_reference,
        multi_scale_deformable_attention,
        triton_self_check,
    )

    dispatch.AUTO_TRITON_DEVICE_TYPES = ("cuda", "cpu")
    records = _Records()
    logging.getLogger(dispatch.__name__).addHandler(records)
    value, shapes, starts, loc, attn = _inputs()
    report = {}

    def auto():
        return multi_scale_deformable_attention(value, shapes, starts, loc, attn, backend="auto")

    # 1. the correct kernels pass, and "auto" then runs them
    report["correct_verdict"] = triton_self_check(value, loc, attn)
    report["correct_backend"] = dispatch.resolve_msda_backend("auto", value, loc, attn)
    expected = msda_reference(value.double(), shapes, starts, loc.double(), attn.double())
    report["correct_error"] = (auto().double() - expected).abs().max().item()
    report["warnings_after_correct"] = list(records.messages)

    # 2. a forward that returns a perturbed tensor: fallback, one warning, the gather path's output
    original_forward = kernels._TritonMSDA.forward

    def perturbed_forward(ctx, *args):
        return original_forward(ctx, *args) * 1.05 + 0.01

    clear_triton_self_check_cache()
    kernels._TritonMSDA.forward = staticmethod(perturbed_forward)
    outputs = [auto() for _ in range(3)]
    report["wrong_backend"] = dispatch.resolve_msda_backend("auto", value, loc, attn)
    report["wrong_equals_gather"] = all(
        torch.equal(out, msda_gather(value, shapes, starts, loc, attn)) for out in outputs
    )
    report["wrong_warnings"] = list(records.messages)
    try:
        multi_scale_deformable_attention(value, shapes, starts, loc, attn, backend="triton")
        report["explicit_error"] = None
    except RuntimeError as error:
        report["explicit_error"] = str(error)
    kernels._TritonMSDA.forward = original_forward

    # 3. a wrong value gradient only (forward correct) is caught too
    original_backward = kernels._TritonMSDA.backward

    def wrong_grad_backward(ctx, grad_output):
        grads = list(original_backward(ctx, grad_output))
        grads[0] = grads[0] * 2
        return tuple(grads)

    clear_triton_self_check_cache()
    kernels._TritonMSDA.backward = staticmethod(wrong_grad_backward)
    report["grad_verdict"] = triton_self_check(value, loc, attn)
    kernels._TritonMSDA.backward = original_backward

    # 4. a launch error (bf16 inputs, a new cache key) falls back instead of raising
    def failing_forward(ctx, *args):
        raise RuntimeError("simulated launch failure: out of resources")

    records.messages.clear()
    kernels._TritonMSDA.forward = staticmethod(failing_forward)
    bf16 = [t.bfloat16() for t in (value, loc, attn)]
    out = multi_scale_deformable_attention(bf16[0], shapes, starts, bf16[1], bf16[2])
    report["launch_equals_gather"] = torch.equal(
        out, msda_gather(bf16[0], shapes, starts, bf16[1], bf16[2])
    )
    report["launch_warnings"] = list(records.messages)
    return report


@pytest.fixture(scope="module")
def report() -> dict:
    pytest.importorskip("triton", reason="the Triton kernels need triton installed")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"interpreter worker failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_correct_kernels_pass_and_run(report):
    assert report["correct_verdict"] is None
    assert report["correct_backend"] == "triton"
    assert report["correct_error"] < 1e-5
    assert report["warnings_after_correct"] == []


def test_wrong_forward_falls_back_with_one_warning(report):
    assert report["wrong_backend"] == "cpu"
    assert report["wrong_equals_gather"]
    (warning,) = report["wrong_warnings"]  # three calls, one warning
    assert "self-check against the reference failed" in warning
    assert "output differs from the reference" in warning
    assert "gather backend" in warning
    # asked for explicitly, a failed self-check is an error naming why, not a silent fallback
    assert "self-check against the reference failed" in report["explicit_error"]


def test_wrong_gradient_is_caught(report):
    assert report["grad_verdict"].startswith("value gradient differs from the reference")


def test_launch_error_falls_back(report):
    assert report["launch_equals_gather"]
    (warning,) = report["launch_warnings"]
    assert "RuntimeError: simulated launch failure" in warning


if __name__ == "__main__":
    print(json.dumps(_worker()))
