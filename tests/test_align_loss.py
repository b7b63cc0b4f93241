"""Mr. DETR-Align IA-BCE class loss and rank weights against a direct float64 formula."""

from __future__ import annotations

import math

import torch

from mrdetr.modeling.criterion import AlignCriterion, rank_weights
from mrdetr.modeling.matcher import HungarianMatcher, OneToManyAssigner

ALPHA, GAMMA, TAU, MIN_Q = 0.25, 2.0, 1.5, 0.01


def _criterion():
    return AlignCriterion(
        num_classes=3,
        matcher=HungarianMatcher(),
        one_to_many_matcher=OneToManyAssigner(iou_weight=0.8),
        encoder_matcher=HungarianMatcher(),
    )


def _xyxy(b):
    cx, cy, w, h = b
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def _iou(a, b):
    a, b = _xyxy(a), _xyxy(b)
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union, union, a, b


def _giou(a, b):
    iou, union, a, b = _iou(a, b)
    area = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return iou - (area - union) / area


def _reference(logits, boxes, targets, indices, normalizer, use_rank):
    """Loss and per-pair rank weights, straight from the spec, in float64 Python."""
    logits, boxes = logits.double().tolist(), boxes.double().tolist()
    pairs = []  # (b, q, g, class, t)
    for b, (src, tgt) in enumerate(indices):
        for q, g in zip(src.tolist(), tgt.tolist()):
            c = int(targets[b]["labels"][g])
            p = 1 / (1 + math.exp(-logits[b][q][c]))
            iou = _iou(boxes[b][q], targets[b]["boxes"][g].double().tolist())[0]
            pairs.append([b, q, g, c, max(p**ALPHA * iou ** (1 - ALPHA), MIN_Q)])
    weights = [1.0] * len(pairs)
    if use_rank:
        for i, (b, _, g, _, t) in enumerate(pairs):
            rank = sum(1 for (b2, _, g2, _, t2) in pairs if (b2, g2) == (b, g) and t2 > t)
            weights[i] = math.exp(-rank / TAU)
    matched = {(b, q, c): t * w for (b, q, _, c, t), w in zip(pairs, weights)}
    total = 0.0
    for b, rows in enumerate(logits):
        for q, row in enumerate(rows):
            for c, x in enumerate(row):
                p = 1 / (1 + math.exp(-x))
                if (b, q, c) in matched:
                    t = matched[(b, q, c)]
                    total += -t * math.log(p) - (1 - t) * math.log(1 - p)
                else:
                    total += -(p**GAMMA) * math.log(1 - p)
    return total / normalizer, weights


def _case():
    """2 images, 4 queries, 3 classes; image 0: GT0 has 3 queries of distinct quality, GT1 has 1."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, generator=g) * 2
    boxes = torch.tensor(
        [
            [
                [0.30, 0.30, 0.20, 0.20],
                [0.70, 0.70, 0.30, 0.20],
                [0.32, 0.31, 0.22, 0.18],
                [0.40, 0.35, 0.25, 0.25],
            ],
            [
                [0.50, 0.50, 0.40, 0.40],
                [0.10, 0.10, 0.05, 0.05],
                [0.90, 0.90, 0.05, 0.05],
                [0.55, 0.45, 0.30, 0.50],
            ],
        ]
    )
    targets = [
        {
            "labels": torch.tensor([1, 2]),
            "boxes": torch.tensor([[0.31, 0.30, 0.21, 0.19], [0.70, 0.68, 0.30, 0.25]]),
        },
        {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.52, 0.48, 0.38, 0.42]])},
    ]
    indices = [
        (torch.tensor([0, 2, 3, 1]), torch.tensor([0, 0, 0, 1])),
        (torch.tensor([0, 3]), torch.tensor([0, 0])),
    ]
    return logits, boxes, targets, indices


def test_ia_bce_matches_float64_formula_without_ranks():
    logits, boxes, targets, indices = _case()
    loss, weights = _criterion().class_loss(logits, boxes, targets, indices, 3.0)
    expected, _ = _reference(logits, boxes, targets, indices, 3.0, use_rank=False)
    assert weights is None
    assert abs(loss.item() - expected) <= 1e-5 * abs(expected)


def test_ia_bce_with_rank_weights_and_weighted_giou():
    logits, boxes, targets, indices = _case()
    crit = _criterion()
    loss, weights = crit.class_loss(logits, boxes, targets, indices, 3.0, one_to_many=True)
    expected, expected_w = _reference(logits, boxes, targets, indices, 3.0, use_rank=True)
    assert abs(loss.item() - expected) <= 1e-5 * abs(expected)
    torch.testing.assert_close(weights.double(), torch.tensor(expected_w, dtype=torch.float64))
    assert sorted(round(w, 2) for w in expected_w[:3]) == [0.26, 0.51, 1.0]
    # supervise hands the same weights to the GIoU term (L1 unweighted)
    from mrdetr.modeling.outputs import Predictions

    terms = crit.supervise(
        Predictions(logits, boxes), targets, indices, 3.0, "_group_0", one_to_many=True
    )
    pairs = [(b, q, g) for b, (s, t) in enumerate(indices) for q, g in zip(s.tolist(), t.tolist())]
    giou = sum(
        w * (1 - _giou(boxes[b, q].double().tolist(), targets[b]["boxes"][g].double().tolist()))
        for (b, q, g), w in zip(pairs, expected_w)
    )
    assert abs(terms["loss_giou_group_0"].item() - giou / 3.0) <= 1e-5
    assert abs(terms["loss_class_group_0"].item() - expected) <= 1e-5 * abs(expected)


def test_rank_weights_values_and_groups():
    quality = torch.tensor([0.3, 0.9, 0.5, 0.7, 0.1, 0.2])
    w = rank_weights(quality, torch.zeros(6, dtype=torch.int64), TAU)
    by_rank = w[quality.argsort(descending=True)]
    assert [round(v, 2) for v in by_rank.tolist()] == [1.0, 0.51, 0.26, 0.14, 0.07, 0.04]
    w = rank_weights(torch.tensor([0.2, 0.3, 0.8, 0.1]), torch.tensor([1, 0, 1, 0]), TAU)
    r1 = math.exp(-1 / TAU)
    torch.testing.assert_close(w, torch.tensor([r1, 1.0, 1.0, r1]))
    assert rank_weights(torch.zeros(0), torch.zeros(0, dtype=torch.int64), TAU).numel() == 0


def test_extreme_logits_give_finite_loss_and_gradients():
    logits = torch.tensor([[[100.0, -100.0, 1e4], [-1e4, 50.0, -50.0]]], requires_grad=True)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]]])
    targets = [
        {
            "labels": torch.tensor([1, 0]),
            "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.8, 0.8, 0.1, 0.1]]),
        }
    ]
    indices = [(torch.tensor([0, 1]), torch.tensor([0, 1]))]
    for one_to_many in (False, True):
        loss, _ = _criterion().class_loss(
            logits, boxes, targets, indices, 1.0, one_to_many=one_to_many
        )
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        # unmatched saturated positives cost ~ their logit: 100 + 1e4 + 50 (the rest ~0);
        # matched (0,1): p ~ 0 and IoU 1 -> t = 0.01 -> ~0.01 * 100; matched (1,0): IoU 0, p ~ 0
        # -> t = 0.01 -> 0.01 * 1e4
        expected = 100 + 1e4 + 50 + 0.01 * 100 + 0.01 * 1e4
        assert abs(loss.item() - expected) <= 1e-3 * expected


def test_empty_matches():
    logits = torch.randn(1, 3, 3)
    boxes = torch.rand(1, 3, 4) * 0.5 + 0.25
    empty = torch.zeros(0, dtype=torch.int64)
    targets = [{"labels": empty, "boxes": torch.zeros(0, 4)}]
    loss, weights = _criterion().class_loss(
        logits, boxes, targets, [(empty, empty)], 1.0, one_to_many=True
    )
    p = logits.double().sigmoid()
    torch.testing.assert_close(loss.double(), -(p**2 * torch.log1p(-p)).sum(), rtol=1e-5, atol=0)
    assert weights.numel() == 0
