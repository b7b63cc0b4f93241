"""The hooks through which variants extend Mr. DETR: the padding-mask mode reaches every variant, the
top-K post-processing returns query indices, the route table seeds routes, and the paired IoUs equal
the diagonals of the pairwise ones."""

from __future__ import annotations

import pytest
import torch
from test_insseg import CONFIG as INSSEG_CONFIG
from test_insseg import TINY_SEG
from test_panoptic_model import CONFIG as PANOPTIC_CONFIG
from test_panoptic_model import TINY_PANOPTIC
from tiny_model import TINY_OVERRIDES, tiny_batch, tiny_cfg

from mrdetr.config import LazyConfig, instantiate
from mrdetr.config.instantiate import InstantiationError
from mrdetr.modeling.postprocessing import topk_detections
from mrdetr.modeling.routes import ROUTES, Route
from mrdetr.structures import (
    box_cxcywh_to_xyxy,
    box_iou,
    generalized_box_iou,
    paired_box_iou,
    paired_generalized_box_iou,
)

# A 160-wide and a 112-wide image: the stride-64 level of the padded batch has 3 columns; nearest
# interpolation of the pixel mask marks 3 of them valid for the narrow image (column 2 starts at pixel
# 106 < 112), the "exact" mode ceil(112 / 64) = 2.
SIZES = ((64, 160), (64, 112))


def _variant(name: str, mode: str):
    torch.manual_seed(0)
    if name == "base":
        cfg = tiny_cfg([f"model.padding_mask_mode={mode}"])
    else:
        config, extra = {
            "insseg": (INSSEG_CONFIG, TINY_OVERRIDES + TINY_SEG),
            "panoptic": (PANOPTIC_CONFIG, TINY_PANOPTIC),
        }[name]
        cfg = LazyConfig.load(str(config))
        cfg = LazyConfig.apply_overrides(cfg, extra + [f"model.padding_mask_mode={mode}"])
    return instantiate(cfg.model).eval()


def _encoded_padding(model) -> torch.Tensor:
    with torch.no_grad():
        images, mask = model.preprocess(tiny_batch(num_boxes=(1, 1), sizes=SIZES))
        return model.encode(images, mask).levels.padding_mask


@pytest.mark.parametrize("variant", ["insseg", "panoptic"])
def test_padding_mask_mode_reaches_insseg_and_panoptic(variant):
    masks = {}
    for mode in ("interpolate", "exact"):
        base = _encoded_padding(_variant("base", mode))
        ours = _encoded_padding(_variant(variant, mode))
        assert torch.equal(ours, base), f"{variant} ignores padding_mask_mode={mode}"
        masks[mode] = ours
    # the batch is one where the two modes differ (on the stride-64 level the mask heads read)
    assert not torch.equal(masks["interpolate"], masks["exact"])


def test_topk_detections_returns_the_query_of_each_detection():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 3, generator=g)
    boxes = torch.rand(2, 7, 4, generator=g) * 0.5 + 0.25
    sizes = [(40, 60), (50, 30)]
    top = topk_detections(logits, boxes, sizes, k=5)
    assert top.queries.shape == (2, 5)
    for i, (h, w) in enumerate(sizes):
        res = top.instances[i]
        picked = boxes[i, top.queries[i]]
        expected = box_cxcywh_to_xyxy(picked) * torch.tensor([w, h, w, h])
        torch.testing.assert_close(res.pred_boxes.tensor, expected)
        scores = logits[i, top.queries[i], res.pred_classes].sigmoid()
        torch.testing.assert_close(res.scores, scores)


def test_route_table_seeds_every_route_from_an_owned_proposal_head():
    owners = {spec.proposal_head for spec in ROUTES.values()}
    assert all(owner.owns_proposal_head for owner in owners)
    assert [r for r in ROUTES if r.owns_proposal_head] == [Route.PRIMARY, Route.INSTRUCT]
    assert ROUTES[Route.SEP_FFN].proposal_head is Route.PRIMARY


def test_a_route_whose_proposal_head_is_missing_is_refused():
    cfg = tiny_cfg()
    del cfg.model.transformer.proposals.heads["instruct"]
    with pytest.raises(InstantiationError, match="seeded by the proposal head 'instruct'"):
        instantiate(cfg.model)


def test_paired_ious_are_the_diagonals_of_the_pairwise_ones():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(9, 2, generator=g)
    boxes1 = torch.cat([xy, xy + torch.rand(9, 2, generator=g)], 1)
    xy = torch.rand(9, 2, generator=g)
    boxes2 = torch.cat([xy, xy + torch.rand(9, 2, generator=g)], 1)
    boxes2[0] = boxes1[0]  # identical pair
    boxes2[1] = boxes1[1] + 5  # disjoint pair
    torch.testing.assert_close(paired_box_iou(boxes1, boxes2), box_iou(boxes1, boxes2).diagonal())
    torch.testing.assert_close(
        paired_generalized_box_iou(boxes1, boxes2), generalized_box_iou(boxes1, boxes2).diagonal()
    )
    assert paired_box_iou(boxes1, boxes2)[0] == 1 and paired_box_iou(boxes1, boxes2)[1] == 0
