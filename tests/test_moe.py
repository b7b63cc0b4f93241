"""Mr. DETR++ Mixture-of-Experts: routing, capacity, balance loss, Mr. DETR equivalence, encoder levels."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mrdetr.modeling.routes import Route
from mrdetr.modeling.transformer.moe import (
    MoEFFN,
    RouteAwareMoEFFN,
    collect_moe_aux_losses,
    moe_ffn_factory,
    reset_moe_aux_losses,
    route_aware_moe_factory,
    route_ffn_to_moe_state_dict,
    switch_balance_loss,
)

D, H = 4, 6


def _moe(**kw) -> MoEFFN:
    torch.manual_seed(0)
    args = dict(embed_dim=D, hidden_dim=H, num_experts=3, top_k=2, aux_loss_weight=0.5)
    args.update(kw)
    return MoEFFN(**args).double()


def _set_router(moe: MoEFFN, logits_per_token: torch.Tensor) -> torch.Tensor:
    """Make the router output exactly ``logits_per_token`` [T, E] for one-hot inputs x = I[:T]."""
    t = logits_per_token.shape[0]
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.bias.zero_()
        moe.router.weight[:, :t] = logits_per_token.t()
    return torch.eye(t, D, dtype=torch.float64)


def test_top_k_gating_matches_direct_formula():
    moe = _moe()
    logits = torch.tensor(
        [[2.0, 1.0, -1.0], [0.0, 3.0, 0.5], [1.0, -2.0, 1.5], [0.2, 0.1, 0.3]], dtype=torch.float64
    )
    x = _set_router(moe, logits)
    out = moe(x)
    expected = torch.zeros_like(x)
    for t in range(x.shape[0]):
        p = logits[t].softmax(-1)
        top = p.topk(2).indices.tolist()
        for e in top:
            expected[t] += p[e] / p[top].sum() * moe.experts[e](x[t])
    torch.testing.assert_close(out, expected)
    # a [B, Q, d] input gives the same per-token result
    torch.testing.assert_close(moe(x.view(2, 2, D)), expected.view(2, 2, D))


def test_capacity_overflow_drops_to_shared_expert_and_priority():
    logits = torch.tensor([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0], [4.0, 0.0]], dtype=torch.float64)
    moe = _moe(num_experts=2, top_k=1, capacity_factor=0.5)  # capacity ceil(0.5*4*1/2) = 1
    assert moe.capacity(4) == 1
    x = _set_router(moe, logits)
    out = moe(x)
    torch.testing.assert_close(out[0], moe.experts[0](x[0]))  # first token in order wins the slot
    torch.testing.assert_close(out[1:], torch.zeros(3, D, dtype=torch.float64))
    shared = _moe(num_experts=2, top_k=1, capacity_factor=0.5, shared_expert=True)
    x = _set_router(shared, logits)
    out = shared(x)
    torch.testing.assert_close(out[1:], shared.shared(x[1:]))
    torch.testing.assert_close(out[0], shared.experts[0](x[0]) + shared.shared(x[0]))
    # top-2: all first choices are served before any second choice
    moe = _moe(num_experts=2, top_k=2, capacity_factor=0.5)  # capacity ceil(0.5*2*2/2) = 1
    lg = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    x = _set_router(moe, lg)
    out = moe(x)
    p0, p1 = lg[0].softmax(-1), lg[1].softmax(-1)
    torch.testing.assert_close(out[0], p0[0] * moe.experts[0](x[0]))  # second choice dropped
    torch.testing.assert_close(out[1], p1[1] * moe.experts[1](x[1]))


def test_gradients_reach_router_and_selected_experts():
    moe = _moe(num_experts=3, top_k=2)
    logits = torch.tensor([[2.0, 1.0, -5.0], [1.0, 2.0, -5.0]], dtype=torch.float64)
    x = _set_router(moe, logits)
    moe.train()
    (moe(x).pow(2).sum() + moe.last_aux_loss).backward()
    assert moe.router.weight.grad.abs().sum() > 0
    for e in (0, 1):  # selected experts
        for p in moe.experts[e].parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0
    for p in moe.experts[2].parameters():  # never selected: in the graph, zero gradient (DDP-safe)
        assert p.grad is not None and p.grad.abs().sum() == 0


def test_balance_loss_hand_made_case():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]], dtype=torch.float64)
    top = torch.tensor([[0], [0], [0], [1]])
    # f = (0.75, 0.25), P = (0.65, 0.35): 2 * (0.75*0.65 + 0.25*0.35) = 1.15
    torch.testing.assert_close(
        switch_balance_loss(probs, top), torch.tensor(1.15, dtype=torch.float64)
    )
    uniform = torch.full((4, 2), 0.5, dtype=torch.float64)
    balanced = torch.tensor([[0], [1], [0], [1]])
    torch.testing.assert_close(
        switch_balance_loss(uniform, balanced), torch.tensor(1.0, dtype=torch.float64)
    )
    # through the module: stored weighted, summed and cleared by collect_moe_aux_losses
    moe = _moe(num_experts=2, top_k=1, aux_loss_weight=0.5)
    x = _set_router(moe, probs.log())
    moe.train()
    moe(x)
    torch.testing.assert_close(moe.last_aux_loss, torch.tensor(0.575, dtype=torch.float64))
    moe(x)
    holder = nn.Sequential(moe)
    aux = collect_moe_aux_losses(holder)
    torch.testing.assert_close(
        aux["loss_moe_aux"].double(), torch.tensor(1.15, dtype=torch.float64)
    )
    assert collect_moe_aux_losses(holder) == {} and moe.last_aux_loss is None
    moe.eval()
    moe(x)
    assert moe.last_aux_loss is None  # nothing stored at inference
    moe.train()
    moe(x)
    reset_moe_aux_losses(holder)
    assert moe.last_aux_loss is None


def test_invalid_tokens_are_skipped():
    moe = _moe(num_experts=2, top_k=1, capacity_factor=0.5)
    logits = torch.tensor([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0], [4.0, 0.0]], dtype=torch.float64)
    x = _set_router(moe, logits)
    valid = torch.tensor([False, True, True, True])
    out = moe(x, valid)
    assert out[0].abs().sum() == 0  # padding: no routed output, takes no capacity
    torch.testing.assert_close(out[1], moe.experts[0](x[1]))


def test_route_aware_two_experts_equal_route_ffn():
    from mrdetr.modeling.transformer import RouteFFN

    torch.manual_seed(0)
    ffn = RouteFFN(embed_dim=D, hidden_dim=H)
    moe = RouteAwareMoEFFN(
        embed_dim=D,
        hidden_dim=H,
        num_experts=2,
        top_k=1,
        router="token",
        route_to_expert={"primary": 0, "instruct": 0, "sep_ffn": 1},
    )
    sd = route_ffn_to_moe_state_dict({f"x.ffn.{k}": v for k, v in ffn.state_dict().items()})
    moe.load_state_dict({k[len("x.ffn.") :]: v for k, v in sd.items()}, strict=True)
    x = torch.randn(2, 3, D)
    for route in Route:
        torch.testing.assert_close(moe(x, route), ffn(x, route), rtol=0, atol=0)


def test_route_router_and_errors():
    moe = RouteAwareMoEFFN(embed_dim=D, hidden_dim=H, num_experts=3, top_k=1, router="route")
    with torch.no_grad():
        moe.route_logits.view(len(Route), 3)[list(Route).index(Route.SEP_FFN), 2] = 5.0
    x = torch.randn(1, 4, D)
    torch.testing.assert_close(moe(x, Route.SEP_FFN), moe.experts[2](x))
    with pytest.raises(ValueError, match="router must be one of"):
        RouteAwareMoEFFN(router="bad")
    with pytest.raises(ValueError, match="capacity_factor must be None"):
        RouteAwareMoEFFN(router="route", capacity_factor=1.0)
    with pytest.raises(ValueError, match="not a route"):
        RouteAwareMoEFFN(route_to_expert={"moe": 0})
    with pytest.raises(ValueError, match="not an expert index"):
        RouteAwareMoEFFN(num_experts=2, route_to_expert={"primary": 2})
    with pytest.raises(ValueError, match="top_k"):
        MoEFFN(num_experts=2, top_k=3)
    with pytest.raises(TypeError, match="bad arguments"):
        route_aware_moe_factory(num_expert=2)
    with pytest.raises(TypeError, match="bad arguments"):
        moe_ffn_factory(router="token")
    assert isinstance(moe_ffn_factory(embed_dim=D, hidden_dim=H)(), MoEFFN)


def _levels(shapes, batch=1, pad_last_rows=0):
    from mrdetr.modeling.transformer.levels import flatten_levels

    feats, masks, pos = [], [], []
    for h, w in shapes:
        feats.append(torch.randn(batch, 8, h, w))
        m = torch.zeros(batch, h, w, dtype=torch.bool)
        if pad_last_rows:
            m[-1, h - pad_last_rows :] = True
        masks.append(m)
        pos.append(torch.randn(batch, 8, h, w))
    return flatten_levels(feats, masks, pos, torch.zeros(len(shapes), 8))


def test_encoder_moe_only_on_selected_levels():
    from mrdetr.modeling.transformer import DeformableEncoder

    shapes = [(4, 4), (2, 3), (1, 2)]
    kw = dict(num_layers=1, embed_dim=8, num_heads=2, num_levels=3, num_points=2, ffn_dim=16)
    torch.manual_seed(0)
    dense = DeformableEncoder(**kw)
    moe = DeformableEncoder(
        **kw,
        moe_factory=moe_ffn_factory(embed_dim=8, hidden_dim=16, num_experts=3, top_k=2),
        moe_levels=[-1],
    )
    extra = set(moe.state_dict()) - set(dense.state_dict())
    assert extra and all(k.startswith("layers.0.moe_ffn.") for k in extra)
    assert set(dense.state_dict()) <= set(moe.state_dict())
    moe.load_state_dict(dense.state_dict(), strict=False)
    tokens, pos, levels = _levels(shapes, batch=2, pad_last_rows=1)
    n_fine = 16 + 6
    calls = []
    moe.layers[0].moe_ffn.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[1]))
    with torch.no_grad():
        a, b = dense(tokens, pos, levels), moe(tokens, pos, levels)
    assert calls == [2]  # the MoE saw exactly the coarsest level's tokens
    torch.testing.assert_close(b[:, :n_fine], a[:, :n_fine], rtol=0, atol=0)
    assert not torch.allclose(b[:, n_fine:], a[:, n_fine:])
    with pytest.raises(ValueError, match="moe_levels"):
        DeformableEncoder(
            **kw, moe_factory=moe_ffn_factory(embed_dim=8, hidden_dim=16), moe_levels=[3]
        )


# ------------------------------------------------------------------------------------ tiny model
PP_CONFIG = "configs/common/models/mr_detr_pp_r50.py"


def _tiny_pp(extra=(), seed=0):
    from tiny_model import REPO, TINY_OVERRIDES

    from mrdetr.config import LazyConfig, instantiate

    cfg = LazyConfig.load(str(REPO / PP_CONFIG))
    cfg = LazyConfig.apply_overrides(cfg, TINY_OVERRIDES + list(extra))
    torch.manual_seed(seed)
    return instantiate(cfg.model)


def test_tiny_mr_detr_state_dict_loads_into_two_expert_moe():
    from tiny_model import tiny_batch, tiny_model

    base = tiny_model().eval()
    pp = _tiny_pp(
        [
            "model.transformer.decoder.ffn_factory.num_experts=2",
            "model.transformer.decoder.ffn_factory.top_k=1",
            "model.transformer.decoder.ffn_factory.shared_expert=False",
            "model.transformer.decoder.ffn_factory.route_to_expert={'primary': 0, 'instruct': 0, 'sep_ffn': 1}",
            "model.transformer.encoder.moe_factory=None",
        ],
        seed=1,
    ).eval()
    missing, unexpected = pp.load_state_dict(
        route_ffn_to_moe_state_dict(base.state_dict()), strict=True
    )
    assert not missing and not unexpected
    batch = tiny_batch(num_boxes=(1,), sizes=((48, 40),))
    routes = (Route.PRIMARY, Route.INSTRUCT, Route.SEP_FFN)
    with torch.no_grad():
        a, b = base.forward_features(batch, routes), pp.forward_features(batch, routes)
    for route in routes:
        for pa, pb in zip(a.routes[route].layers, b.routes[route].layers):
            torch.testing.assert_close(pb.logits, pa.logits, rtol=0, atol=0)
            torch.testing.assert_close(pb.boxes, pa.boxes, rtol=0, atol=0)


def test_tiny_pp_inference_never_runs_auxiliary_experts():
    from tiny_model import tiny_batch

    pp = _tiny_pp().eval()
    counts: dict[str, int] = {}
    for name, mod in pp.transformer.decoder.named_modules():
        if name.endswith(("experts.0", "experts.1", "experts.2", "experts.3", "router")):
            counts[name] = 0
            mod.register_forward_hook(
                lambda m, a, o, name=name: counts.__setitem__(name, counts[name] + 1)
            )
    assert counts
    out = pp(tiny_batch(num_boxes=(1,), sizes=((48, 40),)))
    assert len(out) == 1
    layers = pp.transformer.decoder.num_layers
    for name, n in counts.items():
        assert n == (1 if name.endswith("experts.0") else 0), (name, n)
    assert sum(counts.values()) == layers


def test_tiny_pp_trains_with_aux_loss_and_every_parameter_gets_a_gradient():
    from tiny_model import tiny_batch

    pp = _tiny_pp().train()
    reset_moe_aux_losses(pp)
    losses = pp(tiny_batch(num_boxes=(2,), sizes=((48, 40),)))
    # the model collects the (already weighted) balance loss into its loss dict
    assert "loss_moe_aux" in losses and math.isfinite(losses["loss_moe_aux"].item())
    assert collect_moe_aux_losses(pp) == {}  # consumed by the model
    sum(losses.values()).backward()
    no_grad = [n for n, p in pp.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad


def test_add_plusplus_moe_composes_with_other_variants():
    from tiny_model import REPO, TINY_OVERRIDES

    from mrdetr.config import LazyConfig, instantiate
    from mrdetr.config.loader import run_config_file

    add = run_config_file(str(REPO / PP_CONFIG))["add_plusplus_moe"]
    cfg = LazyConfig.load(str(REPO / "configs/common/models/mr_detr_align_r50.py"))
    cfg.model = add(cfg.model)
    model = instantiate(LazyConfig.apply_overrides(cfg, TINY_OVERRIDES).model)
    assert all(
        isinstance(layer.ffn, RouteAwareMoEFFN) for layer in model.transformer.decoder.layers
    )
    assert all(isinstance(layer.moe_ffn, MoEFFN) for layer in model.transformer.encoder.layers)
    assert model.transformer.encoder.layers[0].moe_levels == (3,)


def test_activation_checkpointing_stores_each_balance_loss_once():
    """Checkpointed encoder/decoder layers re-run their forward in backward: the MoE FFNs must not
    store a second balance loss then; losses and gradients equal the un-checkpointed model's."""
    from tiny_model import tiny_batch

    from mrdetr.modeling.transformer.moe import moe_modules

    batch = tiny_batch(num_boxes=(2,), sizes=((48, 40),))
    runs = {}
    for ckpt in (False, True):
        flags = [f"model.transformer.{m}.use_checkpoint={ckpt}" for m in ("encoder", "decoder")]
        pp = _tiny_pp(flags, seed=3).train()
        g = torch.Generator().manual_seed(0)
        losses = pp.losses(batch, generator=g)
        sum(losses.values()).backward()
        stale = {n: len(m.aux_losses) for n, m in pp.named_modules() if m in moe_modules(pp)}
        assert not any(stale.values()), f"use_checkpoint={ckpt}: stored after backward: {stale}"
        grads = {n: p.grad.clone() for n, p in pp.named_parameters() if p.grad is not None}
        runs[ckpt] = (losses["loss_moe_aux"].detach(), grads)
    torch.testing.assert_close(runs[True][0], runs[False][0])
    assert runs[True][1].keys() == runs[False][1].keys()
    for name, grad in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][name], grad, msg=name)
