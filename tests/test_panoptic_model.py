"""Panoptic Mr. DETR: overlap resolution of query masks into one panoptic map, and a tiny model that
trains (things and stuff as targets) and returns consistent panoptic outputs."""

from __future__ import annotations

import pytest
import torch
from test_insseg import _with_masks
from tiny_model import REPO, TINY_OVERRIDES, tiny_batch

from mrdetr.config import LazyConfig, instantiate
from mrdetr.config.instantiate import InstantiationError
from mrdetr.modeling.heads import QueryMaskHead
from mrdetr.modeling.meta_arch.mr_detr_panoptic import merge_panoptic

CONFIG = REPO / "configs/common/models/mr_detr_panoptic_r50.py"
TINY_QUERY_HEAD = [
    "model.seg_input_proj.in_channels=[128,64,32]",
    "model.seg_input_proj.out_channels=[32,16,8]",
    "model.mask_head.num_groups=2",
    "model.criterion.num_points=64",
    "model.select_box_nums_for_evaluation=10",
]
TINY_PANOPTIC = TINY_OVERRIDES + TINY_QUERY_HEAD + ["model.thing_class_ids=[0,1,2]"]  # 3, 4: stuff
IS_THING = torch.tensor([True, True, True, False, False])
BIG = 20.0  # mask logit of a confident pixel


def _masks(*regions, size=(8, 8)):
    """Mask logits [K, H, W]: +BIG inside each (y1, y2, x1, x2) region, -BIG elsewhere."""
    out = torch.full((len(regions), *size), -BIG)
    for k, (y1, y2, x1, x2) in enumerate(regions):
        out[k, y1:y2, x1:x2] = BIG
    return out


def _merge(scores, labels, masks, overlap=0.8, min_area=0):
    return merge_panoptic(
        torch.tensor(scores),
        torch.tensor(labels),
        masks,
        IS_THING,
        mask_threshold=0.0,
        overlap_threshold=overlap,
        min_segment_area=min_area,
    )


def test_disjoint_masks_become_segments_and_the_rest_is_void():
    ids, info = _merge([0.9, 0.8], [0, 3], _masks((0, 4, 0, 4), (4, 8, 0, 8)))
    assert [(s["id"], s["category_id"], s["isthing"], s["area"]) for s in info] == [
        (1, 0, True, 16),
        (2, 3, False, 32),
    ]
    assert (ids[:4, :4] == 1).all() and (ids[4:] == 2).all() and (ids[:4, 4:] == 0).all()


def test_overlap_goes_to_the_higher_score_and_hidden_queries_are_dropped():
    # query 1 (score 0.5) overlaps query 0 (0.9) on 8 of its 16 pixels: half hidden -> dropped at 0.8
    masks = _masks((0, 4, 0, 4), (2, 6, 0, 4))
    ids, info = _merge([0.9, 0.5], [0, 1], masks)
    assert [s["category_id"] for s in info] == [0]
    assert (ids[:4, :4] == 1).all() and (ids[4:] == 0).all()
    # with a lenient overlap threshold it keeps the 8 pixels it wins
    ids, info = _merge([0.9, 0.5], [0, 1], masks, overlap=0.5)
    assert [(s["category_id"], s["area"]) for s in info] == [(0, 16), (1, 8)]
    assert (ids[4:6, :4] == 2).all()


def test_segments_of_one_stuff_class_are_merged_but_things_are_not():
    masks = _masks((0, 2, 0, 8), (6, 8, 0, 8), (3, 5, 0, 2), (3, 5, 6, 8))
    ids, info = _merge([0.9, 0.8, 0.7, 0.6], [4, 4, 2, 2], masks)
    assert [(s["category_id"], s["area"]) for s in info] == [(4, 32), (2, 4), (2, 4)]
    assert info[0]["score"] == pytest.approx(0.9)
    assert set(ids.unique().tolist()) == {0, 1, 2, 3}
    assert int((ids == 1).sum()) == 32


def test_small_segments_and_empty_inputs():
    ids, info = _merge([0.9, 0.8], [0, 1], _masks((0, 1, 0, 2), (4, 8, 4, 8)), min_area=3)
    assert [s["category_id"] for s in info] == [1] and int((ids == 0).sum()) == 64 - 16
    ids, info = _merge([], [], torch.zeros(0, 5, 7))
    assert info == [] and ids.shape == (5, 7) and (ids == 0).all()


def _tiny_panoptic(seed: int = 0):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(CONFIG)), TINY_PANOPTIC)
    torch.manual_seed(seed)
    return instantiate(cfg.model)


def test_config_thing_ids_must_fit_the_class_count():
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(CONFIG)), TINY_OVERRIDES + TINY_QUERY_HEAD)
    with pytest.raises(
        InstantiationError, match=r"thing_class_ids \[5, 6,.*outside \[0, num_classes=5\)"
    ):
        instantiate(cfg.model)


def test_tiny_panoptic_model_trains_on_things_and_stuff():
    model = _tiny_panoptic()
    model.train()
    batch = _with_masks(tiny_batch(num_boxes=(3, 1)))
    batch[0]["instances"].gt_classes = torch.tensor([0, 3, 4])  # a thing and two stuff regions
    losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    assert {"loss_mask", "loss_dice", "loss_mask_o2m", "loss_dice_sep"} <= set(losses)
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_tiny_panoptic_inference_gives_a_consistent_map():
    model = _tiny_panoptic()
    model.object_mask_threshold = 0.0  # an untrained model: let every query compete
    model.overlap_threshold = 0.0
    model.eval()
    batch = tiny_batch(num_boxes=(0, 0))
    batch[0]["height"], batch[0]["width"] = 32, 40  # predictions come back at the original size
    with torch.no_grad():
        outputs = model(batch)
    for out, inp in zip(outputs, batch):
        ids, info = out["panoptic_seg"]
        assert ids.shape == (inp["height"], inp["width"]) and ids.dtype == torch.int32
        assert info, "with no thresholds some query must win pixels"
        assert sorted(ids.unique().tolist()) == sorted({0} | {s["id"] for s in info})
        for s in info:
            assert int((ids == s["id"]).sum()) == s["area"]
            assert s["isthing"] == (s["category_id"] in (0, 1, 2))
        stuff = [s["category_id"] for s in info if not s["isthing"]]
        assert len(stuff) == len(set(stuff))


def test_query_mask_head_masks_depend_on_the_query_and_every_part_learns():
    head = QueryMaskHead(embed_dim=16, fpn_dims=(12, 8, 4), mask_dim=8, num_groups=2)
    memory = torch.randn(2, 16, 3, 4)
    fpns = [torch.randn(2, 12, 3, 4), torch.randn(2, 8, 6, 8), torch.randn(2, 4, 12, 16)]
    queries = torch.randn(2, 5, 16)
    logits = head(queries, memory, fpns)
    assert logits.shape == (2, 5, 12, 16)
    assert (logits[:, 0] - logits[:, 1]).abs().mean() > 1e-3  # not one mask for every query
    pixels = head.pixel_embeddings(memory, fpns)
    expected = torch.einsum("bqc,bchw->bqhw", head.mask_embed(queries), pixels)
    torch.testing.assert_close(logits, expected)
    logits.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    with pytest.raises(ValueError, match="mask_dim 10 is not divisible by num_groups 4"):
        QueryMaskHead(embed_dim=16, mask_dim=10, num_groups=4)
