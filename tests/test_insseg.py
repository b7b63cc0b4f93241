"""Mr. DETR-Deformable-InstanceSeg: mask head, mask losses, training and inference of a tiny model, and
the official InsSeg checkpoint layout (``../shared/reference/mrdetr_deformable_insseg_r50.layout.json``)."""

from __future__ import annotations

import pytest
import torch
from reference_data import fake_official_state_dict, layout
from tiny_model import REPO, TINY_OVERRIDES, tiny_batch

from mrdetr.checkpoint.official import convert_official_to_ours, load_official
from mrdetr.config import LazyConfig, instantiate
from mrdetr.modeling.criterion.masks import (
    MrDETRMaskCriterion,
    build_insseg_weight_dict,
    dice_loss,
    point_sample,
    sample_uncertain_points,
    sigmoid_ce_loss,
)
from mrdetr.modeling.heads import MaskHeadSmallConv, MHAttentionMap, SegInputProjection
from mrdetr.modeling.meta_arch.mr_detr_insseg import prepare_target_masks
from mrdetr.modeling.routes import Route
from mrdetr.structures import ImageList

CONFIG = REPO / "configs" / "common" / "models" / "mr_detr_insseg_r50.py"
TINY_SEG = [
    "model.seg_input_proj.in_channels=[128,64,32]",
    "model.seg_input_proj.out_channels=[32,16,8]",
    "model.bbox_attention.num_heads=2",
    "model.mask_head.num_groups=2",
    "model.criterion.num_points=64",
    "model.select_box_nums_for_evaluation=10",
]


def _tiny(seed: int = 0):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(CONFIG)), TINY_OVERRIDES + TINY_SEG)
    torch.manual_seed(seed)
    return instantiate(cfg.model)


def _with_masks(batch: list[dict]) -> list[dict]:
    """Give every GT a bool mask: its box region (so masks and boxes agree)."""
    for item in batch:
        inst = item["instances"]
        h, w = inst.image_size
        masks = torch.zeros(len(inst), h, w, dtype=torch.bool)
        for i, (x1, y1, x2, y2) in enumerate(inst.gt_boxes.tensor.round().long().tolist()):
            masks[i, y1:y2, x1:x2] = True
        inst.gt_masks = masks
    return batch


# ---------------------------------------------------------------------------------------- modules
def test_attention_map_softmax_is_joint_over_heads_and_pixels_and_ignores_padding():
    torch.manual_seed(0)
    attn = MHAttentionMap(query_dim=8, hidden_dim=8, num_heads=2)
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[1, :, 2:] = True
    out = attn(torch.randn(2, 5, 8), torch.randn(2, 8, 3, 4), mask=mask)
    assert out.shape == (2, 5, 2, 3, 4)
    torch.testing.assert_close(out.sum((2, 3, 4)), torch.ones(2, 5))
    assert (out[1, :, :, :, 2:] == 0).all()
    assert not torch.allclose(out.sum((3, 4)), torch.full((2, 5, 2), 0.5))  # not per-head


def test_mask_head_shapes_and_official_widths():
    head = MaskHeadSmallConv(context_dim=256, num_attention_heads=8, fpn_dims=(1024, 512, 256))
    assert head.lay1.weight.shape == (264, 264, 3, 3) and head.out_lay.weight.shape == (1, 16, 3, 3)
    assert head.adapter3.weight.shape == (32, 256, 1, 1)
    small = MaskHeadSmallConv(
        context_dim=32, num_attention_heads=2, fpn_dims=(8, 6, 4), num_groups=2
    )
    proj = SegInputProjection(
        in_features=("c", "b", "a"), in_channels=(5, 4, 3), out_channels=(8, 6, 4)
    )
    feats = {
        "a": torch.randn(2, 3, 16, 20),
        "b": torch.randn(2, 4, 8, 10),
        "c": torch.randn(2, 5, 4, 5),
    }
    fpns = proj(feats)
    assert [tuple(f.shape[-2:]) for f in fpns] == [(2, 3), (4, 5), (8, 10)]
    out = small(torch.randn(2, 32, 2, 3), torch.rand(2, 7, 2, 2, 3), fpns)
    assert out.shape == (14, 1, 8, 10)


# ---------------------------------------------------------------------------------------- losses
def test_point_sample_reads_pixel_centres_and_uncertain_points_are_near_the_boundary():
    grid = torch.arange(12.0).view(1, 1, 3, 4)
    centre = torch.tensor([[[(1 + 0.5) / 4, (2 + 0.5) / 3]]])
    assert point_sample(grid, centre).item() == pytest.approx(9.0)
    logits = torch.full((1, 1, 20, 20), 5.0)
    logits[..., 10:] = -5.0
    logits[..., 9:11] = 0.0  # the uncertain band
    g = torch.Generator().manual_seed(0)
    coords = sample_uncertain_points(logits, 40, 10.0, 0.75, generator=g)
    assert coords.shape == (1, 40, 2)
    x = coords[0, :30, 0]
    # uncertain = in the band, or at the outer edge (zero padding pulls logits towards 0 there)
    assert ((x > 0.4) & (x < 0.6) | (x < 0.025) | (x > 0.975)).all()


def test_bce_and_dice_match_their_definitions():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    p = logits.sigmoid()
    bce = -(labels * p.log() + (1 - labels) * (1 - p).log())
    assert sigmoid_ce_loss(logits, labels, 2.0).item() == pytest.approx(
        bce.mean(1).sum().item() / 2
    )
    dice = 1 - (2 * (p * labels).sum(1) + 1) / (p.sum(1) + labels.sum(1) + 1)
    assert dice_loss(logits, labels, 4.0).item() == pytest.approx(dice.sum().item() / 4)


def test_weight_dict_has_the_66_insseg_terms():
    weights = build_insseg_weight_dict(num_decoder_layers=6)
    assert len(weights) == 66
    for suffix in ("", "_o2m", "_sep"):
        assert weights[f"loss_mask{suffix}"] == 5.0 and weights[f"loss_dice{suffix}"] == 2.0


# ---------------------------------------------------------------------------------------- model
@pytest.fixture(scope="module")
def tiny():
    return _tiny()


def test_tiny_insseg_trains_with_every_parameter_getting_a_gradient(tiny):
    tiny.train()
    batch = _with_masks(tiny_batch(num_boxes=(3, 1)))
    losses = tiny(batch)
    assert isinstance(tiny.criterion, MrDETRMaskCriterion)
    mask_keys = {f"loss_{n}{s}" for n in ("mask", "dice") for s in ("", "_o2m", "_sep")}
    assert mask_keys <= set(losses)
    assert len(losses) == 2 * 3 * 3 + 2 * 3 + 6  # 2 layers x 3 routes x 3, 2 encoder heads, 6 mask
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"] > 0 and losses["loss_dice"] > 0
    tiny.zero_grad()
    sum(losses.values()).backward()
    no_grad = [n for n, p in tiny.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    assert tiny.mask_head.out_lay.weight.grad.abs().sum() > 0
    assert tiny.seg_input_proj[0].weight.grad.abs().sum() > 0


def test_mask_losses_use_the_final_layer_matches(tiny):
    """A prediction that equals the GT mask on the matched query gives a lower mask loss."""
    crit = tiny.criterion
    target = torch.zeros(1, 16, 16)
    target[0, 4:12, 4:12] = 1
    good = torch.full((1, 3, 16, 16), -8.0)
    good[0, 1] = target[0] * 16 - 8
    idx = [(torch.tensor([1]), torch.tensor([0]))]
    g = torch.Generator().manual_seed(0)
    right = crit.mask_losses(good, [target], idx, 1.0, "", g)
    wrong = crit.mask_losses(good, [target], [(torch.tensor([0]), torch.tensor([0]))], 1.0, "", g)
    assert right["loss_mask"] < 0.5 * wrong["loss_mask"]
    assert right["loss_dice"] < 0.5 * wrong["loss_dice"]
    empty = crit.mask_losses(
        good, [target[:0]], [(torch.tensor([], dtype=torch.long),) * 2], 1.0, ""
    )
    assert empty["loss_mask"].item() == 0.0


def test_empty_gt_images_train(tiny):
    tiny.train()
    losses = tiny(_with_masks(tiny_batch(num_boxes=(0, 0))))
    assert losses["loss_mask"].item() == 0.0 and torch.isfinite(sum(losses.values()))


def test_missing_or_misshaped_gt_masks_raise_clear_errors(tiny):
    tiny.train()
    with pytest.raises(KeyError, match="gt_masks"):
        tiny(tiny_batch(num_boxes=(1, 1)))
    batch = _with_masks(tiny_batch(num_boxes=(1, 1)))
    batch[0]["instances"].gt_masks = torch.zeros(1, 5, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"gt_masks must have shape \(1, 64, 80\)"):
        tiny(batch)


def test_tiny_insseg_inference_returns_bool_masks_in_the_output_size(tiny):
    tiny.eval()
    batch = tiny_batch(num_boxes=(0, 0), sizes=((64, 80), (48, 64)))
    batch[0]["height"], batch[0]["width"] = 96, 120
    with torch.no_grad():
        out = tiny(batch)
    for res, (h, w) in zip(out, ((96, 120), (48, 64))):
        inst = res["instances"]
        assert inst.image_size == (h, w)
        assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape[1:] == (h, w)
        assert len(inst.pred_masks) == len(inst.pred_boxes) == len(inst.scores) <= 10


def test_masks_are_cropped_to_the_image_before_resizing(tiny):
    """A mask logit map that is positive only on the right half of the padded batch, for an image that
    covers the left half, gives an empty mask; one positive on the image's right half fills that half."""
    logits = torch.full((2, 4, 8), -1.0)
    logits[0, :, 4:] = 1.0
    logits[1, :, 2:4] = 1.0
    masks = tiny.paste_masks(logits, (16, 32), (16, 16), (32, 32))
    assert masks.shape == (2, 32, 32)
    assert not masks[0].any()
    assert masks[1, :, 18:].all() and not masks[1, :, :14].any()


def test_empty_boxes_drop_their_masks(tiny):
    """Masks are filtered with the boxes (the original code kept the masks of dropped boxes)."""
    tiny.eval()
    batch = tiny_batch(num_boxes=(0,), sizes=((64, 80),))
    with torch.no_grad():
        raw = tiny.forward_raw(batch)
    full = tiny.postprocess(raw, batch)[0]["instances"]
    assert len(full.pred_masks) == len(full.pred_boxes) == 10
    raw.pred_boxes[:, :, 2:] = 0.0  # every box empty
    out = tiny.postprocess(raw, batch)[0]["instances"]
    assert len(out.pred_boxes) == 0 and out.pred_masks.shape == (0, 64, 80)


def test_masks_and_targets_share_the_padded_batch_frame_with_size_divisibility(tiny):
    """With ``size_divisibility`` the batch is padded beyond the largest image: predicted masks cover
    that padded tensor, so the targets (training) and the paste frame (inference) must use it too."""
    tiny.size_divisibility = 64
    batch = _with_masks(tiny_batch(num_boxes=(2, 1), sizes=((64, 80), (72, 64))))
    targets = prepare_target_masks(batch, torch.device("cpu"), tiny.size_divisibility)
    assert [tuple(t.shape[1:]) for t in targets] == [(128, 128), (128, 128)]
    assert torch.equal(targets[0][:, :64, :80], batch[0]["instances"].gt_masks.float())
    assert not targets[0][:, 64:].any() and not targets[0][:, :, 80:].any()
    tiny.eval()
    with torch.no_grad():
        raw = tiny.forward_raw(batch)
    assert raw.padded_size == (128, 128)
    stride = 128 // raw.pred_masks.shape[-1]
    assert raw.pred_masks.shape[-2:] == (128 // stride, 128 // stride)
    assert ImageList.padded_size([(64, 80), (72, 64)]) == (72, 80)


# ---------------------------------------------------------------------------------------- layout
def test_official_insseg_layout_loads_with_no_missing_or_unexpected_keys():
    info = layout("mrdetr_deformable_insseg_r50")
    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(str(CONFIG)).model)
    state = fake_official_state_dict(info, period=1000)
    keys = load_official(model, state)
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    ours = model.state_dict()
    for key, value in convert_official_to_ours(state).items():
        if key.startswith(("mask_head", "bbox_attention", "seg_input_proj")):
            assert torch.equal(ours[key], value), key
    params = list(model.parameters())
    assert sum(p.numel() for p in params) == info["total_parameters"]
    assert sum(p.numel() for p in params if p.requires_grad) == info["trainable_parameters"]
    assert model.select_box_nums_for_evaluation == 100
    assert model.criterion.one_to_many_matcher.num_queries == 300
    assert set(model.weight_dict) == set(build_insseg_weight_dict(num_decoder_layers=6))
    assert Route.SEP_FFN in model.train_routes
