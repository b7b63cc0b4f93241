"""Layers with a separate no-autograd path give the same result on both paths."""

from __future__ import annotations

import pytest
import torch

import mrdetr.layers.mlp as mlp
from mrdetr.layers import FFN
from mrdetr.layers.frozen_batchnorm import FrozenBatchNorm2d


@pytest.mark.parametrize("shape", [(2, 37, 8), (75, 8)])
def test_ffn_without_autograd_runs_rows_in_chunks_with_the_same_result(shape, monkeypatch):
    torch.manual_seed(0)
    ffn = FFN(embed_dim=8, hidden_dim=16).eval()
    x = torch.randn(*shape)
    expected = ffn(x)  # autograd on: one pass over all rows
    monkeypatch.setattr(mlp, "_NO_GRAD_CHUNK_ELEMENTS", 16 * 10)  # 10 rows a chunk
    calls = []
    ffn.fc1.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        chunked = ffn(x)
    rows = x[..., 0].numel()
    assert calls == [10] * (rows // 10) + [rows % 10]
    assert chunked.shape == expected.shape
    torch.testing.assert_close(chunked, expected, rtol=1e-6, atol=1e-6)
    with torch.inference_mode():
        torch.testing.assert_close(ffn(x), expected, rtol=1e-6, atol=1e-6)


def test_ffn_with_autograd_is_one_pass_and_trains():
    torch.manual_seed(0)
    ffn = FFN(embed_dim=8, hidden_dim=16)
    calls = []
    ffn.fc1.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    x = torch.randn(3, 5000, 8, requires_grad=True)
    ffn(x).sum().backward()
    assert calls == [(3, 5000, 8)]
    assert x.grad is not None and ffn.fc1.weight.grad is not None


def test_frozen_batchnorm_matches_the_batch_norm_formula_and_passes_gradients():
    torch.manual_seed(0)
    bn = FrozenBatchNorm2d(4)
    bn.weight.uniform_(0.5, 2)
    bn.bias.normal_()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    bn64 = bn.double()
    out = bn64(x)
    view = (1, -1, 1, 1)
    expected = (x - bn64.running_mean.view(view)) / (bn64.running_var.view(view) + bn64.eps).sqrt()
    expected = expected * bn64.weight.view(view) + bn64.bias.view(view)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    scale = bn64.weight / (bn64.running_var + bn64.eps).sqrt()
    torch.testing.assert_close(x.grad, scale.view(view).expand_as(x))


def test_ffn_traced_for_export_is_one_pass_for_any_size(monkeypatch):
    """A traced graph keeps one fc1 -> fc2 pass (no chunks of the tracing input baked in)."""
    torch.manual_seed(0)
    ffn = FFN(embed_dim=8, hidden_dim=16).eval()
    monkeypatch.setattr(mlp, "_NO_GRAD_CHUNK_ELEMENTS", 16 * 10)
    calls = []
    hook = ffn.fc1.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        traced = torch.jit.trace(ffn, torch.randn(35, 8), check_trace=False)
    hook.remove()
    assert [int(rows) for rows in calls] == [35]
    x = torch.randn(52, 8)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), ffn(x), rtol=1e-6, atol=1e-6)
