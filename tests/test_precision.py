"""bf16 inference switch: weights cast once, outputs against float32, the "auto" choice."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch
from tiny_model import tiny_batch, tiny_model
from torchvision.ops.misc import FrozenBatchNorm2d

import mrdetr.engine.precision as precision
from mrdetr.engine.precision import (
    fold_frozen_batchnorm,
    inference_autocast,
    outputs_to_float32,
    prepare_for_inference,
    resolve_inference_dtype,
)

# Largest encoder-output error of the bf16 run, relative to the float32 output's largest magnitude
# (bf16 keeps 8 mantissa bits, ~0.4 % per rounding; two encoder layers measured 1.3-2.1 %).
ENCODER_TOLERANCE = 0.05


def _encoder_output(model, batch, dtype):
    captured = {}
    hook = model.transformer.encoder.register_forward_hook(lambda m, i, o: captured.update(out=o))
    try:
        with inference_autocast("cpu", dtype):
            raw = model.forward_raw(batch)
            detections = outputs_to_float32(model(batch))
    finally:
        hook.remove()
    return captured["out"], raw, detections


@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_inference_matches_float32(seed):
    model, batch = tiny_model(seed=seed).eval(), tiny_batch(seed=seed)
    ref, ref_raw, _ = _encoder_output(model, batch, torch.float32)
    bf16_model = prepare_for_inference(copy.deepcopy(model), torch.bfloat16)
    # weights are cast once: every floating-point parameter is bf16 before the call
    assert {p.dtype for p in bf16_model.parameters()} == {torch.bfloat16}
    assert not any(hasattr(m, "running_var") for m in bf16_model.backbone.modules())  # folded
    conv = next(m for m in bf16_model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    out, raw, detections = _encoder_output(bf16_model, batch, torch.bfloat16)
    assert out.dtype == torch.bfloat16  # the encoder really ran in bf16
    error = ((out.float() - ref).abs().max() / ref.abs().max()).item()
    assert error <= ENCODER_TOLERANCE, f"bf16 encoder output differs by {error:.3f} (relative)"
    assert raw.pred_logits.shape == ref_raw.pred_logits.shape
    assert torch.isfinite(raw.pred_logits.float()).all() and torch.isfinite(raw.pred_boxes).all()
    for item in detections:  # post-processed detections come back in float32
        inst = item["instances"]
        assert inst.pred_boxes.tensor.dtype == torch.float32 and inst.scores.dtype == torch.float32
        assert torch.isfinite(inst.pred_boxes.tensor).all()


def test_folded_frozen_batchnorm_gives_the_same_backbone_output():
    model = tiny_model(seed=3).eval()
    # non-trivial statistics, as in trained weights (fresh FrozenBatchNorm2d is the identity)
    g = torch.Generator().manual_seed(0)
    norms = [m for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    for norm in norms:
        c = norm.weight.numel()
        norm.weight.copy_(torch.rand(c, generator=g) + 0.5)
        norm.bias.copy_(torch.randn(c, generator=g) * 0.1)
        norm.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
        norm.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    images = torch.randn(2, 3, 64, 80, generator=g)
    with torch.no_grad():
        expected = model.backbone(images)
        folded = copy.deepcopy(model.backbone)
        assert fold_frozen_batchnorm(folded) == len(norms)
        got = folded(images)
    assert not any(hasattr(m, "running_var") for m in folded.modules())
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5)


def test_float32_is_left_unchanged():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare_for_inference(model, torch.float32)
    assert not model.training
    for key, value in model.state_dict().items():
        assert value.dtype == before[key].dtype and torch.equal(value, before[key]), key


def test_auto_picks_bf16_only_where_faster(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=precision.__name__)
    monkeypatch.setattr(precision, "_cpu_has_amx", lambda: False)
    monkeypatch.setattr(precision, "_cpu_has_avx512_bf16", lambda: False)
    assert resolve_inference_dtype("auto", "cpu") == torch.float32
    assert "neither AMX nor avx512_bf16" in caplog.text
    monkeypatch.setattr(precision, "_cpu_has_avx512_bf16", lambda: True)
    assert resolve_inference_dtype("auto", "cpu") == torch.bfloat16
    assert "avx512_bf16 (native bf16 dot products; no AMX)" in caplog.text
    monkeypatch.setattr(precision, "_cpu_has_amx", lambda: True)
    assert resolve_inference_dtype("auto", "cpu") == torch.bfloat16
    assert "AMX tiles" in caplog.text
    assert resolve_inference_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_inference_dtype("float32", "cpu") == torch.float32
    with pytest.raises(ValueError, match="got 'half'"):
        resolve_inference_dtype("half", "cpu")


def test_auto_on_this_cpu_follows_its_bf16_flags():
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    native_bf16 = bool(flags & {"amx_bf16", "avx512_bf16"})
    expected = torch.bfloat16 if native_bf16 else torch.float32
    assert resolve_inference_dtype("auto", "cpu") == expected


def test_frozen_batchnorm_keeps_the_input_dtype_and_torchvision_float32_results():
    from torchvision.ops import misc

    from mrdetr.layers import FrozenBatchNorm2d as DtypeKeeping

    g = torch.Generator().manual_seed(0)
    ours, theirs = DtypeKeeping(6), misc.FrozenBatchNorm2d(6)
    for name in ("weight", "bias", "running_mean", "running_var"):
        value = torch.rand(6, generator=g) + 0.5
        getattr(ours, name).copy_(value)
        getattr(theirs, name).copy_(value)
    x = torch.randn(2, 6, 5, 7, generator=g)
    assert torch.equal(ours(x), theirs(x))  # float32: bit-identical
    assert theirs(x.bfloat16()).dtype == torch.float32  # torchvision promotes bf16 activations
    out = ours(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), theirs(x), rtol=2e-2, atol=2e-2)  # bf16 rounding
    backbone = tiny_model().backbone.eval()
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        features = backbone(torch.randn(1, 3, 64, 64, generator=g))
    assert {f.dtype for f in features.values()} == {torch.bfloat16}  # no float32 round trips
