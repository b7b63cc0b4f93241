"""Tests of the functional losses, the Mr. DETR criterion and the loss-weight table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from mrdetr.modeling.criterion import (
    MrDETRCriterion,
    apply_weights,
    build_weight_dict,
    giou_loss,
    l1_loss,
    sigmoid_focal_loss,
)
from mrdetr.modeling.matcher import HungarianMatcher, OneToManyAssigner
from mrdetr.modeling.outputs import EncoderPredictions, MrDETROutput, Predictions, RouteOutput
from mrdetr.modeling.routes import Route

NUM_CLASSES = 5
TERMS = ("loss_class", "loss_bbox", "loss_giou")
REFERENCE_DIR = Path(
    os.environ.get(
        "MRDETR_REFERENCE_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "reference"
    )
)


# ------------------------------------------------------------------------------------------------ #
# helpers
# ------------------------------------------------------------------------------------------------ #
def _targets(with_gt: bool = True):
    if not with_gt:
        empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
        return [empty, {k: v.clone() for k, v in empty.items()}]
    return [
        {
            "labels": torch.tensor([1, 4, 0]),
            "boxes": torch.tensor(
                [[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9]]
            ),
        },
        {
            "labels": torch.tensor([2, 2]),
            "boxes": torch.tensor([[0.2, 0.7, 0.3, 0.2], [0.6, 0.4, 0.2, 0.5]]),
        },
    ]


def _preds(gen, batch, num, leaves):
    logits = torch.randn(batch, num, NUM_CLASSES, generator=gen).requires_grad_()
    boxes = torch.rand(batch, num, 4, generator=gen).mul(0.6).add(0.2).requires_grad_()
    leaves += [logits, boxes]
    return logits, boxes


def _fake_output(num_layers=6, batch=2, num_queries=12, num_tokens=20, seed=0, routes=None):
    """Random MrDETROutput; returns it with the list of its leaf tensors."""
    gen = torch.Generator().manual_seed(seed)
    leaves: list[torch.Tensor] = []
    route_outputs = {}
    for route in routes or (Route.PRIMARY, Route.INSTRUCT, Route.SEP_FFN):
        layers = [Predictions(*_preds(gen, batch, num_queries, leaves)) for _ in range(num_layers)]
        route_outputs[route] = RouteOutput(
            layers=layers,
            hidden=torch.zeros(num_layers, batch, num_queries, 8),
            references=torch.zeros(num_layers, batch, num_queries, 4),
            init_reference=torch.zeros(batch, num_queries, 4),
        )
    encoder = {}
    for route in (Route.PRIMARY, Route.INSTRUCT) if routes is None else ():
        logits, boxes = _preds(gen, batch, num_tokens, leaves)
        anchors = torch.rand(batch, num_tokens, 4, generator=gen).mul(0.5).add(0.2)
        anchors[:, -1] = 1.0  # an invalid anchor
        encoder[route] = EncoderPredictions(logits=logits, boxes=boxes, anchors=anchors)
    return MrDETROutput(routes=route_outputs, encoder=encoder), leaves


def _criterion(**kwargs):
    defaults = dict(
        num_classes=NUM_CLASSES,
        matcher=HungarianMatcher(),
        one_to_many_matcher=OneToManyAssigner(num_queries=900, max_k=6),
        encoder_matcher=HungarianMatcher(cost_class=0.0, cost_bbox=5.0, cost_giou=2.0),
    )
    defaults.update(kwargs)
    return MrDETRCriterion(**defaults)


def _expected_names(num_layers=6):
    suffixes = [""] + [f"_{i}" for i in range(num_layers - 1)]
    suffixes += [f"_group_{i}" for i in range(num_layers)] + [
        f"_sep_{i}" for i in range(num_layers)
    ]
    suffixes += ["_enc", "_enc_o2m"]
    return {f"{t}{s}" for s in suffixes for t in TERMS}


def _xyxy64(b):
    b = b.double()
    return torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], dim=-1)


# ------------------------------------------------------------------------------------------------ #
# functional losses
# ------------------------------------------------------------------------------------------------ #
def test_focal_loss_against_float64_formula():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 7, NUM_CLASSES, generator=gen) * 3
    onehot = (torch.rand(2, 7, NUM_CLASSES, generator=gen) > 0.8).float()
    x, t = logits.double(), onehot.double()
    p = x.sigmoid()
    alpha, gamma, num_boxes = 0.25, 2.0, 3.0
    expected = (
        -(
            t * alpha * (1 - p) ** gamma * torch.log(p)
            + (1 - t) * (1 - alpha) * p**gamma * torch.log(1 - p)
        ).sum()
        / num_boxes
    )
    got = sigmoid_focal_loss(logits, onehot, num_boxes, alpha=alpha, gamma=gamma)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=0)


def test_l1_and_giou_against_hand_computation():
    src = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2], [0.4, 0.6, 0.3, 0.1]])
    tgt = torch.tensor([[0.55, 0.55, 0.2, 0.2], [0.8, 0.8, 0.2, 0.2], [0.4, 0.6, 0.3, 0.1]])
    # Pair 0: xyxy [.4,.4,.6,.6] vs [.45,.45,.65,.65]: inter .0225, union .0575, hull .0625.
    giou0 = 0.0225 / 0.0575 - (0.0625 - 0.0575) / 0.0625
    # Pair 1: disjoint [.1,.1,.3,.3] vs [.7,.7,.9,.9]: iou 0, hull .64, union .08.
    giou1 = 0.0 - (0.64 - 0.08) / 0.64
    num_boxes = 2.0
    expected_giou = ((1 - giou0) + (1 - giou1) + 0.0) / num_boxes
    expected_l1 = (0.05 * 2 + 0.6 * 2) / num_boxes
    assert giou_loss(src, tgt, num_boxes).item() == pytest.approx(expected_giou, rel=1e-5)
    assert l1_loss(src, tgt, num_boxes).item() == pytest.approx(expected_l1, rel=1e-5)
    weights = torch.tensor([1.0, 0.5, 2.0])
    expected_weighted = ((1 - giou0) + 0.5 * (1 - giou1)) / num_boxes
    assert giou_loss(src, tgt, num_boxes, weights).item() == pytest.approx(
        expected_weighted, rel=1e-5
    )


# ------------------------------------------------------------------------------------------------ #
# criterion
# ------------------------------------------------------------------------------------------------ #
def test_criterion_produces_the_60_official_names():
    outputs, _ = _fake_output()
    losses = _criterion()(outputs, _targets())
    assert set(losses) == _expected_names() == set(build_weight_dict())
    assert len(losses) == 60
    for name, value in losses.items():
        assert value.dim() == 0 and value.dtype == torch.float32 and torch.isfinite(value), name


def test_absent_routes_and_heads_produce_no_terms():
    outputs, _ = _fake_output(num_layers=3, routes=(Route.PRIMARY,))
    losses = _criterion()(outputs, _targets())
    expected = {f"{t}{s}" for s in ("", "_0", "_1") for t in TERMS}
    assert set(losses) == expected


def test_primary_terms_match_direct_computation():
    outputs, _ = _fake_output(num_layers=2, routes=(Route.PRIMARY,))
    targets = _targets()
    losses = _criterion()(outputs, targets)
    final = outputs.routes[Route.PRIMARY].layers[-1]
    indices = HungarianMatcher()(final.logits, final.boxes, targets)
    onehot = torch.zeros(final.logits.shape, dtype=torch.float64)
    src, tgt = [], []
    for b, (q, g) in enumerate(indices):
        onehot[b, q, targets[b]["labels"][g]] = 1
        src.append(final.boxes[b, q].double())
        tgt.append(targets[b]["boxes"][g].double())
    src, tgt = torch.cat(src), torch.cat(tgt)
    num_boxes = 5.0
    p = final.logits.double().sigmoid()
    focal = (
        -(onehot * 0.25 * (1 - p) ** 2 * p.log() + (1 - onehot) * 0.75 * p**2 * (1 - p).log()).sum()
        / num_boxes
    )
    torch.testing.assert_close(losses["loss_class"].double(), focal, rtol=1e-5, atol=0)
    l1 = (src - tgt).abs().sum() / num_boxes
    torch.testing.assert_close(losses["loss_bbox"].double(), l1, rtol=1e-5, atol=0)
    a, b = _xyxy64(src), _xyxy64(tgt)
    inter = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0).prod(-1)
    union = (a[:, 2:] - a[:, :2]).prod(-1) + (b[:, 2:] - b[:, :2]).prod(-1) - inter
    hull = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).prod(-1)
    giou = inter / union - (hull - union) / hull
    torch.testing.assert_close(
        losses["loss_giou"].double(), (1 - giou).sum() / num_boxes, rtol=1e-5, atol=0
    )


def test_query_matched_twice_gets_both_classes_and_both_box_pairs():
    crit = _criterion()
    logits = torch.zeros(1, 3, NUM_CLASSES)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.4, 0.4, 0.2, 0.2], [0.6, 0.6, 0.2, 0.2]]])
    targets = [
        {
            "labels": torch.tensor([0, 3]),
            "boxes": torch.tensor([[0.4, 0.4, 0.2, 0.2], [0.5, 0.6, 0.2, 0.2]]),
        }
    ]
    indices = [(torch.tensor([1, 1]), torch.tensor([0, 1]))]
    onehot = crit.onehot_targets(logits, targets, indices)
    assert onehot.sum() == 2 and onehot[0, 1, 0] == 1 and onehot[0, 1, 3] == 1
    out = crit.supervise(Predictions(logits, boxes), targets, indices, 2.0, "_x", one_to_many=True)
    assert set(out) == {"loss_class_x", "loss_bbox_x", "loss_giou_x"}
    # Pair (q1, g0) is exact; pair (q1, g1) is off by 0.1 and 0.2 in cx, cy.
    assert out["loss_bbox_x"].item() == pytest.approx((0.1 + 0.2) / 2.0, rel=1e-5)
    expected_class = sigmoid_focal_loss(logits, onehot, 2.0)
    torch.testing.assert_close(out["loss_class_x"], expected_class)


def test_one_to_many_normalizer_scale():
    outputs, _ = _fake_output(num_layers=2)
    targets = _targets()
    base = _criterion()(outputs, targets)
    scaled = _criterion(one_to_many_normalizer_scale=3.0)(outputs, targets)
    for name in base:
        factor = 3.0 if ("_group_" in name or "_sep_" in name) else 1.0
        torch.testing.assert_close(scaled[name] * factor, base[name], rtol=1e-6, atol=0)


def test_encoder_matches_on_anchors_and_is_class_agnostic():
    num_tokens = 6
    logits = torch.zeros(1, num_tokens, NUM_CLASSES)
    boxes = torch.full((1, num_tokens, 4), 0.3)
    boxes[0, 4] = torch.tensor([0.62, 0.58, 0.3, 0.4])  # best predicted box: token 4
    anchors = torch.full((1, num_tokens, 4), 1.0)
    anchors[0, 2] = torch.tensor([0.7, 0.6, 0.3, 0.4])  # best anchor: token 2
    target = [{"labels": torch.tensor([3]), "boxes": torch.tensor([[0.7, 0.6, 0.3, 0.4]])}]
    enc = EncoderPredictions(logits=logits, boxes=boxes, anchors=anchors)
    route_output = {}
    for on_anchors, token in ((True, 2), (False, 4)):
        crit = _criterion(encoder_match_on_anchors=on_anchors)
        losses = crit(MrDETROutput(routes=route_output, encoder={Route.PRIMARY: enc}), target)
        assert set(losses) == {"loss_class_enc", "loss_bbox_enc", "loss_giou_enc"}
        expected_l1 = (boxes[0, token] - target[0]["boxes"][0]).abs().sum()
        torch.testing.assert_close(losses["loss_bbox_enc"], expected_l1)
        onehot = torch.zeros_like(logits)
        onehot[0, token, 0] = 1  # class-agnostic: channel 0, not class 3
        torch.testing.assert_close(
            losses["loss_class_enc"], sigmoid_focal_loss(logits, onehot, 1.0)
        )
    with pytest.raises(ValueError, match="no anchors"):
        no_anchor = EncoderPredictions(logits=logits, boxes=boxes)
        _criterion()(MrDETROutput(routes={}, encoder={Route.INSTRUCT: no_anchor}), target)


def test_zero_gt_is_finite_and_every_input_gets_a_gradient():
    outputs, leaves = _fake_output(num_layers=2)
    crit = _criterion()
    assert crit.num_boxes(_targets(False), torch.device("cpu")) == 1.0
    assert crit.num_boxes(_targets(), torch.device("cpu")) == 5.0
    losses = crit(outputs, _targets(False))
    for name, value in losses.items():
        assert torch.isfinite(value), name
        if "bbox" in name or "giou" in name:
            assert value.item() == 0.0 and value.requires_grad, name
    sum(losses.values()).backward()
    for leaf in leaves:
        assert leaf.grad is not None
    boxes_grads = leaves[1::2]
    assert all(torch.count_nonzero(g.grad) == 0 for g in boxes_grads)


def test_half_empty_batch():
    outputs, _ = _fake_output(num_layers=2)
    full, empty = _targets(), _targets(False)
    losses = _criterion()(outputs, [full[0], empty[1]])
    assert len(losses) == 3 * (2 + 2 + 2 + 2)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox"].item() > 0 and losses["loss_bbox_group_1"].item() > 0


def test_low_precision_inputs_give_float32_losses():
    outputs, _ = _fake_output(num_layers=1, routes=(Route.PRIMARY, Route.INSTRUCT))
    for route_output in outputs.routes.values():
        for layer in route_output.layers:
            layer.logits = layer.logits.detach().bfloat16()
            layer.boxes = layer.boxes.detach().bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = _criterion()(outputs, _targets())
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_bad_inputs_give_clear_errors():
    outputs, _ = _fake_output(num_layers=1, routes=(Route.PRIMARY,))
    bad = _targets()
    bad[0]["labels"] = torch.tensor([1, 9, 0])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        _criterion()(outputs, bad)
    with pytest.raises(ValueError, match="expected num_classes=7"):
        _criterion(num_classes=7)(outputs, _targets())


# ------------------------------------------------------------------------------------------------ #
# weights
# ------------------------------------------------------------------------------------------------ #
def test_weight_dict_values_and_apply_weights():
    weights = build_weight_dict()
    assert weights["loss_class"] == 2.0 and weights["loss_bbox_4"] == 5.0
    assert weights["loss_giou_sep_5"] == 2.0 and weights["loss_bbox_enc_o2m"] == 15.0
    assert "loss_class_5" not in weights and "loss_class_enc_sep" not in weights
    custom = build_weight_dict(
        num_decoder_layers=2,
        one_to_many={"loss_class": 1.0},
        routes=(Route.INSTRUCT,),
        encoder_routes=(),
    )
    assert custom == {"loss_class_group_0": 1.0, "loss_class_group_1": 1.0}

    losses = {"loss_class": torch.tensor(1.5), "loss_bbox_enc": torch.tensor(2.0)}
    weighted = apply_weights(losses, weights)
    assert weighted["loss_class"].item() == 3.0 and weighted["loss_bbox_enc"].item() == 30.0
    with pytest.raises(KeyError, match=r"loss_foo.*loss_bar"):
        apply_weights(
            {**losses, "loss_foo": torch.tensor(1.0), "loss_bar": torch.tensor(1.0)}, weights
        )


def test_weight_dict_equals_official_minus_enc_sep():
    path = REFERENCE_DIR / "mrdetr_deformable_r50_300q.train_losses.json"
    if not path.is_file():
        pytest.skip(f"reference data not found at {path} (set MRDETR_REFERENCE_DIR)")
    data = json.loads(path.read_text())
    official = {k: v for k, v in data["criterion_weight_dict"].items() if "_enc_sep" not in k}
    assert build_weight_dict() == official
    assert set(build_weight_dict()) == set(data["dn_enabled"]["unweighted"])
