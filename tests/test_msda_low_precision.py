"""The gather backend of multi-scale deformable attention with a bf16/fp16 value: the value table
stays in its low-precision storage where that is safe (inference; bf16 training), with float32
geometry and sums."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_msda import _inputs, _run

import mrdetr.ops.msda.gather as gather_module
from mrdetr.ops.msda import msda_gather, msda_reference


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gather_inference_keeps_low_precision_table(monkeypatch, dtype):
    """Without autograd, a bf16/fp16 value is gathered from its own storage (no float32 copy of the
    table), with float32 geometry and sums: the output is the float32 result rounded once."""
    value, shapes, starts, locations, weights = _inputs("many_queries", dtype=torch.float32)
    low = value.to(dtype)
    expected = msda_reference(low.double(), shapes, starts, locations.double(), weights.double())
    tables = []
    embedding_bag = F.embedding_bag

    def recording(input, weight, *args, **kwargs):
        tables.append(weight.dtype)
        return embedding_bag(input, weight, *args, **kwargs)

    monkeypatch.setattr(gather_module.F, "embedding_bag", recording)
    with torch.no_grad():
        out = msda_gather(low, shapes, starts, locations, weights)
    assert tables == [dtype] and out.dtype == dtype
    # bf16/fp16 output rounding (2^-8 / 2^-11 relative) plus the rounded per-point weights
    tol = {torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype] * expected.abs().max().item()
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=tol)
    # with low-precision locations too the geometry is still computed in float32
    tables.clear()
    with torch.inference_mode():
        half_locs = msda_gather(low, shapes, starts, locations.to(dtype), weights.to(dtype))
    assert tables == [dtype] and half_locs.dtype == dtype
    # when a gradient is recorded a bf16 table is kept (float32 range), float16 runs in float32
    tables.clear()
    out = msda_gather(low.requires_grad_(), shapes, starts, locations, weights)
    assert tables == [torch.bfloat16 if dtype == torch.bfloat16 else torch.float32]
    assert out.dtype == dtype
    torch.testing.assert_close(out.detach().double(), expected, rtol=0, atol=tol)


def test_gather_bf16_training_gradients():
    """Training with a bf16 value (autocast): the table stays bf16, the value gradient is summed in
    float32 and rounded once, the location/attention gradients come from bf16 corner dot products
    (float32 accumulation). All within bf16 rounding (2^-8 relative) of the float64 reference."""
    value, shapes, starts, locations, weights = _inputs("many_queries")
    grad_out = torch.randn(value.shape[0], locations.shape[1], value.shape[2] * value.shape[3])
    low_value, low_grad = value.bfloat16(), grad_out.bfloat16()
    expected = _run(
        msda_reference, low_value.double(), shapes, starts, locations, weights, low_grad.double()
    )
    got = _run(msda_gather, low_value, shapes, starts, locations.float(), weights.float(), low_grad)
    assert [t.dtype for t in got] == [torch.bfloat16, torch.bfloat16, torch.float32, torch.float32]
    for name, a, e in zip(("out", "value", "locations", "weights"), got, expected):
        scale = e.abs().max().item()
        err = (a.double() - e).abs().max().item() / scale
        assert err <= 1e-2, f"{name}: max error {err:.2e} of its largest magnitude"
