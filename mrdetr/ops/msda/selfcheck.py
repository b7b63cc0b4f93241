"""First-use self-check of the Triton kernels against the reference.

A Triton kernel that compiles can still compute the wrong thing on a device or dtype it was never run
on (a compiler regression, a new architecture, an unsupported atomic). So the first time the Triton
backend is about to run on a (device, input dtypes) pair, :func:`triton_self_check` runs it on a small
random problem (forward and the three gradients), compares it with :func:`msda_reference` computed in
float64 on the same rounded inputs, and caches the verdict: None (the kernels agree) or one line that
says why they cannot be used (a mismatch, naming the tensor and the error, or the exception a compile
or launch raised). The dispatcher falls back to the gather path on a failed verdict.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import triton_kernels
from .reference import msda_reference

__all__ = ["clear_triton_self_check_cache", "triton_self_check"]

# The problem: two levels, odd sizes, head dim not a power of two, locations reaching outside the
# map on every side (zero padding), so every branch of the kernels is exercised; small enough to
# take milliseconds on a GPU and about a second in the Triton interpreter.
_LEVEL_SIZES = ((5, 7), (2, 3))
_BATCH, _HEADS, _HEAD_DIM, _QUERIES, _POINTS = 2, 2, 12, 9, 3
_LOCATION_RANGE = (-0.3, 1.3)
_SEED = 20260
# Largest error allowed, relative to the largest magnitude of the float64 reference tensor; the
# kernels accumulate in float32, so the bound is set by the rounding of the inputs' storage dtype.
_TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}

_verdicts: dict[tuple[str, torch.dtype, torch.dtype, torch.dtype], str | None] = {}


def clear_triton_self_check_cache() -> None:
    """Forget every cached verdict (the next Triton call per device and dtypes checks again)."""
    _verdicts.clear()


def _problem(device: torch.device, dtypes: tuple[torch.dtype, torch.dtype, torch.dtype]):
    g = torch.Generator().manual_seed(_SEED)  # own generator: the global RNG stream is untouched
    shapes = torch.tensor(_LEVEL_SIZES, dtype=torch.int64)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    levels, (low, high) = len(_LEVEL_SIZES), _LOCATION_RANGE
    value = torch.randn(_BATCH, int(areas.sum()), _HEADS, _HEAD_DIM, generator=g)
    loc = torch.rand(_BATCH, _QUERIES, _HEADS, levels, _POINTS, 2, generator=g) * (high - low) + low
    attn = torch.rand(_BATCH, _QUERIES, _HEADS, levels, _POINTS, generator=g)
    grad_out = torch.randn(_BATCH, _QUERIES, _HEADS * _HEAD_DIM, generator=g)
    value, loc, attn = (t.to(device=device, dtype=dt) for t, dt in zip((value, loc, attn), dtypes))
    return value, shapes.to(device), starts.to(device), loc, attn, grad_out.to(device, dtypes[0])


def _run(op, value, shapes, starts, loc, attn, grad_out) -> list[Tensor]:
    leaves = [t.detach().clone().requires_grad_() for t in (value, loc, attn)]
    out = op(leaves[0], shapes, starts, leaves[1], leaves[2])
    out.backward(grad_out)
    return [out.detach()] + [t.grad for t in leaves]


def _mismatch(got: list[Tensor], expected: list[Tensor], dtypes) -> str | None:
    names = ("output", "value gradient", "location gradient", "attention gradient")
    for name, a, e, dtype in zip(names, got, expected, (dtypes[0], *dtypes)):
        if a is None or a.shape != e.shape:
            shape = None if a is None else tuple(a.shape)
            return f"{name} has shape {shape}, expected {tuple(e.shape)}"
        scale = e.abs().max().clamp(min=1.0)
        error = ((a.double() - e).abs().max() / scale).item()
        tol = max(_TOLERANCE[dtype], _TOLERANCE[dtypes[0]])
        if not error <= tol:  # also catches NaN
            return f"{name} differs from the reference by {error:.3g} (relative), allowed {tol:g}"
    return None


def _check(device: torch.device, dtypes) -> str | None:
    inputs = _problem(device, dtypes)
    try:
        got = _run(triton_kernels.msda_triton, *inputs)
    except Exception as error:  # compile or launch failure: report it, never crash the model
        return f"the kernels raised {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    value, shapes, starts, loc, attn, grad_out = inputs
    doubles = [t.double() for t in (value, loc, attn, grad_out)]
    expected = _run(msda_reference, doubles[0], shapes, starts, doubles[1], doubles[2], doubles[3])
    return _mismatch(got, expected, dtypes)


def triton_self_check(
    value: Tensor, sampling_locations: Tensor, attention_weights: Tensor
) -> str | None:
    """Why the Triton kernels must not be used for inputs like these, or None when they agree.

    The first call per (device, value dtype, locations dtype, weights dtype) runs the kernels on a
    small random problem (with gradients enabled and autocast off, whatever the caller's context)
    and caches the verdict; later calls return it at once. A first call during a CUDA graph capture
    cannot check (it would read results on the host) and answers "not checked yet", uncached.

    Args:
        value: [B, S, M, D] the op's value tensor (only its device and dtype are read).
        sampling_locations: [B, Q, M, L, P, 2] (only the dtype is read).
        attention_weights: [B, Q, M, L, P] (only the dtype is read).

    Returns:
        None when forward and gradients match the float64 reference, else one line saying why not.
    """
    dtypes = (value.dtype, sampling_locations.dtype, attention_weights.dtype)
    key = (str(value.device), *dtypes)
    if key not in _verdicts and value.is_cuda and torch.cuda.is_current_stream_capturing():
        # the check reads results on the host, which a CUDA graph capture forbids: not cached, so
        # the first eager call still checks
        return "not checked yet (first call inside a CUDA graph capture; run once eagerly first)"
    if key not in _verdicts:
        with torch.enable_grad(), torch.autocast(value.device.type, enabled=False):
            _verdicts[key] = _check(value.device, dtypes)
    return _verdicts[key]
