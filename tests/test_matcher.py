"""Tests of the Hungarian matcher and the one-to-many assigner on small hand-made cases."""

from __future__ import annotations

import itertools

import pytest
import torch

from mrdetr.modeling.matcher import HungarianMatcher, OneToManyAssigner

BIG_LOGIT = 8.0


def _target(labels, boxes):
    return {
        "labels": torch.tensor(labels, dtype=torch.int64),
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
    }


def _pairs(match):
    q, g = match
    assert q.dtype == torch.int64 and g.dtype == torch.int64
    return sorted(zip(q.tolist(), g.tolist()))


# ------------------------------------------------------------------------------------------------ #
# Hungarian
# ------------------------------------------------------------------------------------------------ #
GT_BOXES = [[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9]]
GT_LABELS = [1, 3, 0]


def _perfect_predictions(perm: list[int], num_classes: int = 4):
    """Queries perm[g] predict GT g exactly (box and confident class); others are far and unsure."""
    num_queries = len(perm) + 2
    boxes = torch.full((1, num_queries, 4), 0.05)
    logits = torch.full((1, num_queries, num_classes), -BIG_LOGIT)
    for g, q in enumerate(perm):
        boxes[0, q] = torch.tensor(GT_BOXES[g])
        logits[0, q, GT_LABELS[g]] = BIG_LOGIT
    return logits, boxes


def test_hungarian_perfect_predictions_recover_permutation():
    perm = [3, 0, 4]
    logits, boxes = _perfect_predictions(perm)
    (q, g) = HungarianMatcher()(logits, boxes, [_target(GT_LABELS, GT_BOXES)])[0]
    assert _pairs((q, g)) == sorted((p, i) for i, p in enumerate(perm))
    assert torch.equal(q, q.sort().values)  # query indices ascending


def test_hungarian_cost_class_zero_uses_boxes_only():
    perm = [1, 2, 0]
    logits, boxes = _perfect_predictions(perm)
    # Misleading logits: every query is confident about GT 0's class only.
    logits = torch.full_like(logits, -BIG_LOGIT)
    logits[..., GT_LABELS[0]] = BIG_LOGIT
    matcher = HungarianMatcher(cost_class=0.0, cost_bbox=5.0, cost_giou=2.0)
    match = matcher(logits, boxes, [_target(GT_LABELS, GT_BOXES)])[0]
    assert _pairs(match) == sorted((p, i) for i, p in enumerate(perm))
    # NaN logits are never read when the class cost is off.
    match_nan = matcher(
        torch.full_like(logits, float("nan")), boxes, [_target(GT_LABELS, GT_BOXES)]
    )
    assert _pairs(match_nan[0]) == _pairs(match)


def _brute_force_cost(logits, boxes, labels, gt_boxes, alpha=0.25, gamma=2.0, eps=1e-8):
    """float64 cost matrix [Q, n] written directly from the formula."""
    p = logits.double().sigmoid()[:, labels]
    pos = alpha * (1 - p) ** gamma * -torch.log(p + eps)
    neg = (1 - alpha) * p**gamma * -torch.log(1 - p + eps)
    l1 = (boxes.double()[:, None, :] - gt_boxes.double()[None, :, :]).abs().sum(-1)

    def xyxy(b):
        return torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], dim=-1)

    a, b = xyxy(boxes.double()), xyxy(gt_boxes.double())
    cost = torch.empty(len(a), len(b), dtype=torch.float64)
    for i in range(len(a)):
        for j in range(len(b)):
            iw = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            ih = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            inter = iw * ih
            area_a = (a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1])
            area_b = (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1])
            union = area_a + area_b - inter
            enc = (max(a[i, 2], b[j, 2]) - min(a[i, 0], b[j, 0])) * (
                max(a[i, 3], b[j, 3]) - min(a[i, 1], b[j, 1])
            )
            giou = inter / union - (enc - union) / enc
            cost[i, j] = 5 * l1[i, j] + 2 * (pos[i, j] - neg[i, j]) + 2 * -giou
    return cost


def test_hungarian_is_min_cost_against_brute_force():
    gen = torch.Generator().manual_seed(0)
    num_queries, num_classes = 5, 4
    logits = torch.randn(1, num_queries, num_classes, generator=gen) * 2
    boxes = torch.cat(
        [
            torch.rand(1, num_queries, 2, generator=gen) * 0.5 + 0.25,
            torch.rand(1, num_queries, 2, generator=gen) * 0.3 + 0.1,
        ],
        dim=-1,
    )
    target = _target(GT_LABELS, GT_BOXES)
    q, g = HungarianMatcher()(logits, boxes, [target])[0]
    cost = _brute_force_cost(logits[0], boxes[0], target["labels"], target["boxes"])
    best = min(
        sum(cost[rows[j], j].item() for j in range(3))
        for rows in itertools.permutations(range(num_queries), 3)
    )
    assert cost[q, g].sum().item() == pytest.approx(best, rel=1e-6)
    assert len(set(q.tolist())) == 3 and sorted(g.tolist()) == [0, 1, 2]


def test_hungarian_empty_gt_and_half_empty_batch():
    logits, boxes = _perfect_predictions([0, 1, 2])
    empty = _target([], [])
    matcher = HungarianMatcher()
    ((q, g),) = matcher(logits, boxes, [empty])
    assert q.numel() == 0 and g.numel() == 0 and q.dtype == torch.int64
    batch_logits, batch_boxes = torch.cat([logits, logits]), torch.cat([boxes, boxes])
    res = matcher(batch_logits, batch_boxes, [empty, _target(GT_LABELS, GT_BOXES)])
    assert res[0][0].numel() == 0
    assert _pairs(res[1]) == [(0, 0), (1, 1), (2, 2)]
    res = matcher(batch_logits, batch_boxes, [_target(GT_LABELS, GT_BOXES), empty])
    assert _pairs(res[0]) == [(0, 0), (1, 1), (2, 2)] and res[1][0].numel() == 0


def test_hungarian_float32_under_autocast_and_bad_targets():
    logits, boxes = _perfect_predictions([2, 0, 1])
    targets = [_target(GT_LABELS, GT_BOXES)]
    expected = _pairs(HungarianMatcher()(logits, boxes, targets)[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = HungarianMatcher()(logits.bfloat16(), boxes.bfloat16(), targets)[0]
    assert _pairs(got) == expected
    with pytest.raises(ValueError, match="2 target dicts for a batch of 1"):
        HungarianMatcher()(logits, boxes, targets * 2)


# ------------------------------------------------------------------------------------------------ #
# One-to-many assigner
# ------------------------------------------------------------------------------------------------ #
def _assigner(**kwargs):
    defaults = {"num_queries": 900, "max_k": 6, "threshold": 0.4}
    defaults.update(kwargs)
    return OneToManyAssigner(**defaults)


def test_assigner_threshold_and_topk_per_gt():
    quality = torch.tensor([[0.50, 0.30, 0.10, 0.45], [0.20, 0.60, 0.39, 0.10]])
    # q0 -> g0 (0.5), q1 -> g1 (0.6), q3 -> g0 (0.45) positive; q2 (0.39) negative.
    assert _pairs(_assigner().assign(quality)) == [(0, 0), (1, 1), (3, 0)]


def test_assigner_low_quality_rescue_keeps_query_argmax():
    # Nothing reaches the threshold. g0's best query q1 belongs to g1 (0.35 > 0.3); g1's best is q1.
    quality = torch.tensor([[0.10, 0.30, 0.05], [0.20, 0.35, 0.10]])
    assert _pairs(_assigner().assign(quality)) == [(1, 1)]
    # g0's best is q0 (its own); g1's best is also q0, whose argmax is g0: g1 gets nothing.
    quality = torch.tensor([[0.30, 0.10, 0.20], [0.25, 0.05, 0.20]])
    assert _pairs(_assigner().assign(quality)) == [(0, 0)]


def test_assigner_takes_best_queries_of_row_and_can_share_a_query():
    # Positives: q0 -> g0, q3 -> g0, q1 -> g1, q2 -> g1 (c = [2, 2]). Row g1's top-2 over ALL
    # queries is q3 (0.9, whose own argmax is g0) and q1, not the sampled q2; row g0's top-2 is
    # q3 and q0, so q3 serves both GTs.
    quality = torch.tensor([[0.50, 0.10, 0.10, 0.95], [0.20, 0.60, 0.55, 0.90]])
    assert _pairs(_assigner().assign(quality)) == [(0, 0), (1, 1), (3, 0), (3, 1)]


def test_assigner_max_k_and_fewer_queries_than_k():
    quality = torch.linspace(0.5, 0.95, 10)[None, :]
    assert _pairs(_assigner(max_k=3).assign(quality)) == [(7, 0), (8, 0), (9, 0)]
    small = torch.tensor([[0.9, 0.8, 0.1]])  # Q = 3 < max_k = 6: 2 positives, no error
    assert _pairs(_assigner().assign(small)) == [(0, 0), (1, 0)]


def _capped_case():
    """6 positives (3 per GT) and a cap of int(8 * 0.25) = 2."""
    quality = torch.tensor(
        [
            [0.90, 0.80, 0.70, 0.10, 0.10, 0.10, 0.00, 0.00],
            [0.10, 0.10, 0.10, 0.85, 0.75, 0.65, 0.00, 0.00],
        ]
    )
    return quality, _assigner(num_queries=8, positive_fraction=0.25)


def test_assigner_cap_uses_generator():
    quality, assigner = _capped_case()
    results = set()
    for seed in range(12):
        a = _pairs(assigner.assign(quality, torch.Generator().manual_seed(seed)))
        b = _pairs(assigner.assign(quality, torch.Generator().manual_seed(seed)))
        assert a == b  # same seed, same result
        # Hand derivation: the first 2 of a permutation of the positives [0..5] are kept.
        perm = torch.randperm(6, generator=torch.Generator().manual_seed(seed))[:2]
        counts = [int((perm < 3).sum()), int((perm >= 3).sum())]
        expected = [(q, 0) for q in range(counts[0])] + [(q, 1) for q in range(3, 3 + counts[1])]
        assert a == sorted(expected)
        assert len(a) == 2
        results.add(tuple(a))
    assert len(results) > 1  # the subsample really depends on the generator


def test_assigner_below_cap_is_rng_independent():
    quality, _ = _capped_case()
    assigner = _assigner(num_queries=900)
    expected = [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1)]
    for seed in range(5):
        assert _pairs(assigner.assign(quality, torch.Generator().manual_seed(seed))) == expected
    assert _pairs(assigner.assign(quality)) == expected


def test_assigner_global_rng_consumption_matches_official_subsampling():
    quality, assigner = _capped_case()  # 6 positives, 2 negatives
    torch.manual_seed(7)
    assigner.assign(quality)
    after = torch.rand(3)
    torch.manual_seed(7)
    torch.randperm(6)
    torch.randperm(2)
    assert torch.equal(after, torch.rand(3))


def test_assigner_forward_quality_and_empty():
    # Query boxes: q0 = GT 0 exactly, q1 lies inside GT 0 (IoU 2/3), q2 far away; GT 1 matched by none.
    gt = _target([2, 0], [[0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]])
    boxes = torch.tensor(
        [[[0.25, 0.25, 0.2, 0.2], [0.2833333, 0.25, 0.1333333, 0.2], [0.5, 0.5, 0.02, 0.02]]]
    )
    logits = torch.full((1, 3, 3), -20.0)
    logits[0, 2, 0] = 20.0  # q2 is sure of class 0 (GT 1's class): quality 0.3 for g1
    assigner = _assigner(iou_weight=0.7)
    quality = assigner.quality(logits[0], boxes[0], gt["labels"], gt["boxes"])
    expected = torch.tensor([[0.7, 0.7 * 2 / 3, 0.0], [0.0, 0.0, 0.3]])
    torch.testing.assert_close(quality, expected, atol=1e-5, rtol=0)
    # q0 (0.7) and q1 (0.467) positive for g0; q2 rescued for g1 (0.3 < 0.4).
    assert _pairs(assigner(logits, boxes, [gt])[0]) == [(0, 0), (1, 0), (2, 1)]
    empty = assigner(logits, boxes, [_target([], [])])[0]
    assert empty[0].numel() == 0 and empty[1].numel() == 0 and empty[0].dtype == torch.int64
