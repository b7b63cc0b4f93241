"""Contrastive denoising: group/query counts, slot layout, noise, attention masks, DN criterion terms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mrdetr.modeling.criterion import DNCriterion, sigmoid_focal_loss
from mrdetr.modeling.denoising import (
    ContrastiveDenoising,
    DNMeta,
    denoising_attention_mask,
    dn_match_indices,
    instruct_attention_mask,
    split_denoising,
)
from mrdetr.modeling.matcher import HungarianMatcher, OneToManyAssigner
from mrdetr.modeling.outputs import MrDETROutput, Predictions, RouteOutput
from mrdetr.modeling.routes import Route
from mrdetr.structures import box_cxcywh_to_xyxy, inverse_sigmoid

C, D_MODEL = 7, 16


def _targets(counts, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in counts:
        cxcy = 0.3 + 0.4 * torch.rand(n, 2, generator=g)
        wh = 0.1 + 0.2 * torch.rand(n, 2, generator=g)
        out.append(
            {"labels": torch.randint(0, C, (n,), generator=g), "boxes": torch.cat([cxcy, wh], 1)}
        )
    return out


def _dn(**kwargs):
    torch.manual_seed(0)
    return ContrastiveDenoising(num_classes=C, embed_dim=D_MODEL, **kwargs)


@pytest.mark.parametrize(
    "counts, groups, num_dn",
    [
        ((1,), 100, 200),
        ((3,), 33, 198),
        ((3, 0), 33, 198),
        ((50,), 2, 200),
        ((2, 50), 2, 200),
        ((150,), 1, 300),
    ],
)
def test_group_and_query_counts(counts, groups, num_dn):
    dn = _dn()(_targets(counts), num_queries=5)
    assert dn.meta.num_groups == groups and dn.meta.num_dn_queries == num_dn
    assert dn.meta.single_padding == 2 * max(counts)
    b = len(counts)
    assert dn.content.shape == (b, num_dn, D_MODEL) and dn.box_logits.shape == (b, num_dn, 4)
    assert dn.attn_mask.shape == (num_dn + 5, num_dn + 5) and dn.attn_mask.dtype == torch.bool


@pytest.mark.parametrize("counts, kwargs", [((0,), {}), ((0, 0), {}), ((3,), {"dn_number": 0})])
def test_no_dn_without_gt_or_when_disabled(counts, kwargs):
    assert _dn(**kwargs)(_targets(counts), num_queries=5) is None


def test_slot_layout_without_noise():
    module = _dn(label_noise_ratio=0.0, box_noise_scale=0.0)
    targets = _targets((3, 1))
    dn = module(targets, num_queries=4)
    m, groups = 3, dn.meta.num_groups
    for b, t in enumerate(targets):
        n = len(t["labels"])
        for block in range(2 * groups):
            for slot in range(m):
                q = block * m + slot
                if slot < n:
                    expected = module.label_enc.weight[t["labels"][slot]]
                    torch.testing.assert_close(dn.content[b, q], expected)
                    torch.testing.assert_close(
                        dn.box_logits[b, q], inverse_sigmoid(t["boxes"][slot])
                    )
                else:  # empty slot: zero content and a zero box logit (0.5, 0.5, 0.5, 0.5)
                    assert not dn.content[b, q].any() and not dn.box_logits[b, q].any()


def test_box_noise_positives_inside_negatives_outside():
    targets = _targets((4, 2), seed=1)
    dn = _dn(label_noise_ratio=0.0, box_noise_scale=0.4)(targets, num_queries=4)
    m = dn.meta.max_gt
    boxes = dn.box_logits.sigmoid()
    for b, t in enumerate(targets):
        gt = t["boxes"]
        half = torch.cat([gt[:, 2:], gt[:, 2:]], 1) / 2 * 0.4
        for block in range(2 * dn.meta.num_groups):
            noisy = box_cxcywh_to_xyxy(boxes[b, block * m : block * m + len(gt)])
            shift = (noisy - box_cxcywh_to_xyxy(gt)).abs() / half
            if block % 2 == 0:
                assert (shift <= 1 + 1e-4).all()
            else:  # |u| in [1, 2) unless clamped to the image (not the case for these boxes)
                assert (shift >= 1 - 1e-4).all() and (shift <= 2 + 1e-4).all()


def test_label_noise_rate_and_generator_reproducibility():
    module = _dn(dn_number=1500, label_noise_ratio=0.5, box_noise_scale=0.0)
    targets = [{"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    dn = module(targets, num_queries=1, generator=torch.Generator().manual_seed(5))
    changed = (dn.content[0] - module.label_enc.weight[2]).abs().sum(-1) > 0
    # P(replaced) = 0.25 and a replacement keeps the class with probability 1/C
    assert abs(changed.float().mean().item() - 0.25 * (C - 1) / C) < 0.03
    again = module(targets, num_queries=1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(dn.content, again.content) and torch.equal(dn.box_logits, again.box_logits)
    torch.manual_seed(9)
    a = module(targets, num_queries=1)
    torch.manual_seed(9)
    b = module(targets, num_queries=1)
    assert torch.equal(a.content, b.content)


def test_mask_layout():
    mask = denoising_attention_mask(num_groups=3, single_padding=2, num_queries=4)
    p = 6
    assert mask[p:, :p].all() and not mask[p:, p:].any() and not mask[:p, p:].any()
    for i in range(p):
        for j in range(p):
            assert bool(mask[i, j]) == (i // 2 != j // 2)
    instr = instruct_attention_mask(mask, p, num_instruction_tokens=3)
    assert instr.shape == (10, 13)
    assert instr[:p, :3].all() and not instr[p:, :3].any() and torch.equal(instr[:, 3:], mask)


def _attend(attn, x, mask, keys=None, values=None):
    keys = x if keys is None else keys
    values = x if values is None else values
    return attn(x, keys, values, attn_mask=mask, need_weights=False)[0]


def test_mask_blocks_forbidden_inputs():
    """Perturbing an input a row may not see leaves that row's output unchanged."""
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(D_MODEL, 2, batch_first=True).eval()
    groups, pad, q = 3, 4, 5
    p = groups * pad
    mask = denoising_attention_mask(groups, pad, q)
    x = torch.randn(2, p + q, D_MODEL)
    base = _attend(attn, x, mask)
    # matching queries never see DN queries
    y = x.clone()
    y[:, :p] += torch.randn(2, p, D_MODEL) * 10
    out = _attend(attn, y, mask)
    torch.testing.assert_close(out[:, p:], base[:, p:], atol=1e-5, rtol=0)
    # DN group 1 sees neither group 0 nor group 2 ...
    y = x.clone()
    y[:, :pad] += 10
    y[:, 2 * pad : p] -= 10
    out = _attend(attn, y, mask)
    torch.testing.assert_close(out[:, pad : 2 * pad], base[:, pad : 2 * pad], atol=1e-5, rtol=0)
    # ... but DN queries do see the matching queries and their own group
    y = x.clone()
    y[:, p:] += 1
    assert (_attend(attn, y, mask)[:, :p] - base[:, :p]).abs().max() > 1e-3
    y = x.clone()
    y[:, pad] += 1
    assert (_attend(attn, y, mask)[:, pad + 1] - base[:, pad + 1]).abs().max() > 1e-3
    # instructions (extra key/value columns) are seen by matching rows only
    instr = torch.randn(2, 3, D_IN := D_MODEL)
    imask = instruct_attention_mask(mask, p, 3)
    keys = torch.cat([instr, x], 1)
    base = _attend(attn, x, imask, keys, keys)
    keys2 = torch.cat([instr + torch.randn(2, 3, D_IN) * 10, x], 1)
    out = _attend(attn, x, imask, keys2, keys2)
    torch.testing.assert_close(out[:, :p], base[:, :p], atol=1e-5, rtol=0)
    assert (out[:, p:] - base[:, p:]).abs().max() > 1e-3


def test_match_indices_pair_positive_slots_with_their_gt():
    meta = DNMeta(single_padding=6, num_groups=2)
    targets = _targets((3, 0, 1))
    idx = dn_match_indices(meta, targets)
    assert idx[0][0].tolist() == [0, 1, 2, 6, 7, 8] and idx[0][1].tolist() == [0, 1, 2, 0, 1, 2]
    assert idx[1][0].numel() == 0 and idx[1][1].numel() == 0
    assert idx[2][0].tolist() == [0, 6] and idx[2][1].tolist() == [0, 0]


def _criterion():
    return DNCriterion(
        num_classes=C,
        matcher=HungarianMatcher(),
        one_to_many_matcher=OneToManyAssigner(iou_weight=0.8),
        encoder_matcher=HungarianMatcher(),
        encoder_match_on_anchors=False,
        one_to_many_normalizer_scale=3.0,
    )


def _route_output(b, q, layers, g):
    preds = [
        Predictions(
            torch.randn(b, q, C, generator=g), torch.rand(b, q, 4, generator=g) * 0.5 + 0.25
        )
        for _ in range(layers)
    ]
    return RouteOutput(
        preds, torch.zeros(layers, b, q, 1), torch.zeros(layers, b, q, 4), torch.zeros(b, q, 4)
    )


def test_dn_criterion_terms():
    g = torch.Generator().manual_seed(0)
    targets = _targets((3, 1))
    meta = DNMeta(single_padding=6, num_groups=2)
    p, q, layers = meta.num_dn_queries, 8, 2
    routes = (Route.PRIMARY, Route.INSTRUCT, Route.SEP_FFN)
    full = {r: _route_output(2, p + q, layers, g) for r in routes}
    out = MrDETROutput(routes={}, dn_meta=meta)
    for r in routes:
        out.routes[r], out.denoising[r] = split_denoising(full[r], p)
    losses = _criterion()(out, targets, generator=torch.Generator().manual_seed(1))
    suffixes = ["_dn", "_dn_0", "_dn_o2m", "_dn_o2m_0", "_dn_sep", "_dn_sep_0"]
    dn_keys = {f"loss_{t}{s}" for s in suffixes for t in ("class", "bbox", "giou")}
    assert dn_keys <= set(losses) and len(losses) == 3 * 3 * layers + len(dn_keys)
    # final PRIMARY DN layer, by hand: one-hot at the positive slots, normaliser num_boxes * G
    pred = full[Route.PRIMARY].layers[-1]
    onehot = torch.zeros(2, p, C)
    src, tgt = [], []
    for b, t in enumerate(targets):
        for grp in range(2):
            for k in range(len(t["labels"])):
                onehot[b, grp * 6 + k, t["labels"][k]] = 1
                src.append(pred.boxes[b, grp * 6 + k])
                tgt.append(t["boxes"][k])
    norm = 4 * 2
    expected = sigmoid_focal_loss(pred.logits[:, :p], onehot, norm)
    torch.testing.assert_close(losses["loss_class_dn"], expected)
    l1 = (torch.stack(src) - torch.stack(tgt)).abs().sum() / norm
    torch.testing.assert_close(losses["loss_bbox_dn"], l1)


def test_dn_criterion_zero_terms_without_dn():
    g = torch.Generator().manual_seed(0)
    out = MrDETROutput(
        routes={r: _route_output(2, 8, 2, g) for r in (Route.PRIMARY, Route.SEP_FFN)}
    )
    losses = _criterion()(out, _targets((2, 1)))
    dn = {k: v for k, v in losses.items() if "_dn" in k}
    assert sorted(dn) == sorted(
        f"loss_{t}{s}"
        for s in ("_dn", "_dn_0", "_dn_sep", "_dn_sep_0")
        for t in ("class", "bbox", "giou")
    )
    assert all(v.item() == 0.0 for v in dn.values())
