"""Mr. DETR-DINO / -Align models: tiny training runs (loss names, gradients, DN on/off), DN isolation in
the decoder, configs, official layouts, and R50 eval parity with the 900-query reference outputs."""

from __future__ import annotations

import pytest
import torch
from reference_data import (
    eval_batched_inputs,
    fake_official_state_dict,
    layout,
    official_weights,
    ref_outputs,
)
from scipy.optimize import linear_sum_assignment
from tiny_model import REPO, TINY_OVERRIDES, tiny_batch

from mrdetr.checkpoint.official import convert_ours_to_official, load_official
from mrdetr.config import LazyConfig, instantiate
from mrdetr.modeling.criterion import AlignCriterion, DNCriterion
from mrdetr.modeling.denoising import split_denoising
from mrdetr.modeling.meta_arch.inputs import prepare_targets
from mrdetr.modeling.routes import Route

MODELS = REPO / "configs" / "common" / "models"
CONFIGS = {"dino": MODELS / "mr_detr_dino_r50.py", "align": MODELS / "mr_detr_align_r50.py"}
LAYOUTS = {"dino": "mrdetr_dino_r50", "align": "mrdetr_align_r50"}
TERMS = ("class", "bbox", "giou")


# a few DN groups keep the tiny runs fast (3 GT -> G = 2, P = 12; counts for 100 in test_denoising.py)
TINY_DN = ["model.dn_number=6"]


def _tiny(variant, extra=(), seed=0):
    cfg = LazyConfig.load(str(CONFIGS[variant]))
    cfg = LazyConfig.apply_overrides(cfg, TINY_OVERRIDES + TINY_DN + list(extra))
    torch.manual_seed(seed)
    return instantiate(cfg.model)


def _names(suffixes):
    return {f"loss_{t}{s}" for s in suffixes for t in TERMS}


# official names for D = 2 decoder layers (the 114 of D = 6 minus the layers 2..5)
TINY_NAMES = _names(
    [
        "",
        "_0",
        "_group_0",
        "_group_1",
        "_sep_0",
        "_sep_1",
        "_enc",
        "_enc_o2m",
        "_dn",
        "_dn_0",
        "_dn_o2m",
        "_dn_o2m_0",
        "_dn_sep",
        "_dn_sep_0",
    ]
)


def _losses_and_grads(model, batch):
    model.train()
    torch.manual_seed(3)
    losses = model(batch)
    model.zero_grad()
    sum(losses.values()).backward()
    return losses


@pytest.mark.parametrize("variant", ["dino", "align"])
def test_tiny_training_terms_and_every_parameter_gets_a_gradient(variant):
    model = _tiny(variant)
    assert type(model.criterion) is (AlignCriterion if variant == "align" else DNCriterion)
    losses = _losses_and_grads(model, tiny_batch((3, 1)))
    assert set(losses) == TINY_NAMES and len(losses) == 42
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(v.item() != 0 for k, v in losses.items() if "_dn" in k and "class" in k)
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    assert model.denoising.label_enc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", ["dino", "align"])
def test_dn_off_gives_zero_dn_terms_and_the_same_other_terms(variant):
    batch = tiny_batch((3, 1))
    with_dn = _losses_and_grads(_tiny(variant), batch)
    model = _tiny(variant, ["model.dn_number=0"])
    without = _losses_and_grads(model, batch)
    assert set(without) == TINY_NAMES
    for key, value in without.items():
        if "_dn" in key:
            assert value.item() == 0.0, key
        else:  # matching queries never see the DN queries
            torch.testing.assert_close(value, with_dn[key], rtol=1e-4, atol=1e-6, msg=key)
    # label_enc stays in the graph (DDP without find_unused_parameters)
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    if variant == "align":
        return  # same DN code path as DINO
    # a batch without any GT builds no DN query either
    model = _tiny(variant)
    losses = _losses_and_grads(model, tiny_batch((0, 0)))
    assert set(losses) == TINY_NAMES and all(losses[k].item() == 0 for k in losses if "_dn" in k)
    assert model.denoising.label_enc.weight.grad is not None


def test_dn_queries_are_isolated_in_every_route():
    """Matching outputs equal the DN-free run; DN group 1 ignores group 0; on the INSTRUCT route the
    DN queries do not see the instruction tokens (checked on the first layer's output)."""
    model = _tiny("dino").train()
    batch = tiny_batch((2, 1))
    targets = prepare_targets(batch, model.device)
    with torch.no_grad():
        images, mask = model.preprocess(batch)
        encoded = model.encode(images, mask)
        dn = model.denoising(targets, model.num_queries, torch.Generator().manual_seed(0))
        p, pad = dn.meta.num_dn_queries, dn.meta.single_padding
        for route in (Route.PRIMARY, Route.INSTRUCT, Route.SEP_FFN):
            seed = model.transformer.select(
                encoded, route if route is Route.INSTRUCT else Route.PRIMARY
            )
            plain = model.run_route(encoded, route, seed.box_logits)
            matching, dn_preds = split_denoising(
                model.run_route(encoded, route, seed.box_logits, dn), p
            )
            for a, b in zip(matching.layers, plain.layers):
                torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=0)
                torch.testing.assert_close(a.boxes, b.boxes, atol=1e-5, rtol=0)
            perturbed = type(dn)(dn.content.clone(), dn.box_logits.clone(), dn.attn_mask, dn.meta)
            perturbed.content[:, :pad] += 5.0
            perturbed.box_logits[:, :pad] += 0.5
            _, dn_perturbed = split_denoising(
                model.run_route(encoded, route, seed.box_logits, perturbed), p
            )
            for a, b in zip(dn_preds, dn_perturbed):
                torch.testing.assert_close(a.logits[:, pad:], b.logits[:, pad:], atol=1e-5, rtol=0)
                assert (a.logits[:, :pad] - b.logits[:, :pad]).abs().max() > 1e-4
        seed = model.transformer.select(encoded, Route.INSTRUCT)
        before = model.run_route(encoded, Route.INSTRUCT, seed.box_logits, dn)
        for layer in model.transformer.decoder.layers:
            layer.self_attn.instruction_content.weight.add_(1.0)
        after = model.run_route(encoded, Route.INSTRUCT, seed.box_logits, dn)
        first_before, first_after = before.layers[0].logits, after.layers[0].logits
        torch.testing.assert_close(first_after[:, :p], first_before[:, :p], atol=1e-5, rtol=0)
        assert (first_after[:, p:] - first_before[:, p:]).abs().max() > 1e-4


@pytest.mark.parametrize("variant", ["dino", "align"])
def test_weight_dict_has_the_114_official_terms(variant):
    cfg = LazyConfig.load(str(CONFIGS[variant]))
    weights = instantiate(cfg.model.weight_dict)
    layers = [f"_{i}" for i in range(5)]
    expected = _names(
        [""]
        + layers
        + [f"_group_{i}" for i in range(6)]
        + [f"_sep_{i}" for i in range(6)]
        + ["_enc", "_enc_o2m", "_dn"]
        + [f"_dn{s}" for s in layers]
        + ["_dn_o2m"]
        + [f"_dn_o2m{s}" for s in layers]
        + ["_dn_sep"]
        + [f"_dn_sep{s}" for s in layers]
    )
    assert set(weights) == expected and len(weights) == 114
    cls = 1.0 if variant == "align" else 2.0
    for suffix in (
        "",
        "_3",
        "_group_5",
        "_sep_0",
        "_dn",
        "_dn_o2m_2",
        "_dn_sep_4",
        "_enc",
        "_enc_o2m",
    ):
        assert weights[f"loss_class{suffix}"] == cls, suffix
        assert weights[f"loss_bbox{suffix}"] == 5.0 and weights[f"loss_giou{suffix}"] == 2.0
    assert cfg.model.num_queries == 900 and cfg.model.denoising.dn_number == 100
    assert cfg.model.criterion.one_to_many_matcher.iou_weight == 0.8
    assert cfg.model.criterion.encoder_match_on_anchors is False


PROJECTS = REPO / "projects"
# (config, queries, max_iter, checkpoint period, eval period, PE temperature, PE offset)
PROJECT_CONFIGS = [
    (
        "mr_detr_dino/configs/deformable_detr_r50_two_stage_12ep_plusplus.py",
        900,
        90000,
        30000,
        10000,
        10000,
        -0.5,
    ),
    (
        "mr_detr_dino/configs/deformable_detr_r50_two_stage_24ep_plusplus.py",
        300,
        180000,
        7500,
        7500,
        10000,
        -0.5,
    ),
    (
        "mr_detr_align/configs/deformable_detr_r50_two_stage_12ep_plusplus.py",
        900,
        90000,
        10000,
        5000,
        10000,
        -0.5,
    ),
    (
        "mr_detr_align/configs/deformable_detr_r50_two_stage_24ep_plusplus.py",
        900,
        180000,
        10000,
        7500,
        20,
        0.0,
    ),
]


@pytest.mark.parametrize("path, q, iters, ckpt, evalp, temp, offset", PROJECT_CONFIGS)
def test_project_configs(path, q, iters, ckpt, evalp, temp, offset):
    cfg = LazyConfig.load(str(PROJECTS / path))
    assert {"model", "dataloader", "optimizer", "lr_multiplier", "train"} <= set(cfg)
    assert cfg.model.num_queries == q and cfg.model.select_box_nums_for_evaluation == 300
    assert cfg.train.max_iter == iters
    assert cfg.train.checkpointer.period == ckpt and cfg.train.eval_period == evalp
    assert cfg.model.position_embedding.temperature == temp
    assert cfg.model.position_embedding.offset == offset
    assert cfg.model.denoising.dn_number == 100
    sched = instantiate(cfg.lr_multiplier)
    decay = 150000 if iters == 180000 else 82500
    assert sched(decay / iters - 1e-4) == 1.0 and sched(decay / iters + 1e-4) == pytest.approx(0.1)


# ----------------------------------------------------------------------------------- R50 models
@pytest.fixture(scope="module", params=["dino", "align"])
def r50(request):
    info = layout(LAYOUTS[request.param])
    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(str(CONFIGS[request.param])).model)
    return request.param, info, model


def test_official_layout_loads_and_counts_match(r50):
    _, info, model = r50
    official = fake_official_state_dict(info)
    keys = load_official(model, official)
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    assert torch.equal(model.denoising.label_enc.weight, official["label_enc.weight"])
    params = list(model.parameters())
    assert sum(p.numel() for p in params) == info["total_parameters"]
    assert sum(p.numel() for p in params if p.requires_grad) == info["trainable_parameters"]
    back = convert_ours_to_official(model.state_dict())
    assert sorted(back) == sorted(k for k, _, _ in info["state_dict"])
    for key, shape, _ in info["state_dict"]:
        assert list(back[key].shape) == shape, key


def _match(ours, ref):
    rows, cols = linear_sum_assignment(torch.cdist(ours, ref, p=1).numpy())
    return torch.as_tensor(rows), torch.as_tensor(cols)


def test_eval_equals_the_900q_reference(r50):
    """Eval uses no DN: with the 900q reference weights (label_enc keeps its own values) the outputs are
    the 900q model's. One image per variant keeps the test short."""
    variant, _, model = r50
    keys = load_official(model, official_weights("mrdetr_deformable_r50_900q"))
    assert keys.missing_keys == ["denoising.label_enc.weight"] and keys.unexpected_keys == []
    image = 0 if variant == "dino" else 1
    ref = ref_outputs("mrdetr_deformable_r50_900q")["single"][image]
    raw = model.eval().forward_raw(eval_batched_inputs((image,)))
    rows, cols = _match(raw.pred_boxes[0], ref["box_pred"][0])
    for ours, theirs, what in (
        (raw.pred_boxes, ref["box_pred"], "box_pred"),
        (raw.pred_logits, ref["box_cls"], "box_cls"),
    ):
        diff = (ours[0][rows] - theirs[0][cols]).abs().max().item()
        assert diff <= 1e-4, f"{variant} {what}: max |diff| {diff:.3g}"
