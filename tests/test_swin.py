"""Swin backbone: official block order checked against timm, checkpoint key conversion (Microsoft / timm
ImageNet files), activation checkpointing, and the official Swin-L Align layout
(``../shared/reference/mrdetr_align_swinl.layout.json``)."""

from __future__ import annotations

import pytest
import timm
import torch
from reference_data import fake_official_state_dict, layout
from tiny_model import REPO
from torch.nn import functional as F

from mrdetr.checkpoint.official import load_official
from mrdetr.checkpoint.swin import (
    convert_ours_to_timm_swin,
    convert_swin_imagenet_to_ours,
    convert_timm_swin_to_ours,
    is_timm_swin_layout,
    load_swin_imagenet,
)
from mrdetr.config import LazyConfig, instantiate
from mrdetr.modeling.backbone.swin import SwinBlock, SwinTransformer

SMALL = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=2)
MODELS = REPO / "configs" / "common" / "models"
ALIGN_SWINL = (
    REPO
    / "projects"
    / "mr_detr_align"
    / "configs"
    / ("deformable_detr_swinl_two_stage_12ep_plusplus.py")
)


def _timm_swin():
    torch.manual_seed(0)
    return timm.models.swin_transformer.SwinTransformer(
        img_size=64,
        patch_size=4,
        num_classes=3,
        always_partition=True,
        strict_img_size=False,
        **SMALL,
    ).eval()


def _ours(**kw):
    torch.manual_seed(1)
    return SwinTransformer(drop_path_rate=0.0, **{**SMALL, **kw}).eval()


def test_forward_matches_timm_after_key_conversion():
    """On window-multiple maps the official order (downsample at the end of a stage) equals timm's
    (downsample at the start of the next) once the keys are moved one stage down."""
    ref = _timm_swin()
    ours = _ours(out_indices=(0, 1, 2, 3))
    converted = convert_timm_swin_to_ours(ref.state_dict())
    keys = ours.load_state_dict(
        {k.removeprefix("backbone."): v for k, v in converted.items()}, strict=False
    )
    assert keys.unexpected_keys == []
    assert sorted(keys.missing_keys) == sorted(
        f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")
    )
    x = torch.randn(1, 3, 64, 64)
    expected = ref.forward_intermediates(
        x, indices=[0, 1, 2, 3], norm=False, intermediates_only=True
    )
    out = ours(x)
    for i, feat in enumerate(expected):
        normed = F.layer_norm(feat.permute(0, 2, 3, 1), feat.shape[1:2]).permute(0, 3, 1, 2)
        torch.testing.assert_close(out[f"p{i}"], normed, rtol=1e-5, atol=1e-5)


def test_timm_round_trip_and_every_key_maps():
    ours = _ours()
    sd = ours.state_dict()
    timm_sd = convert_ours_to_timm_swin({f"backbone.{k}": v for k, v in sd.items()})
    ref_keys = set(_timm_swin().state_dict()) - {
        k for k in _timm_swin().state_dict() if k.startswith(("head.", "norm."))
    }
    assert set(timm_sd) == ref_keys
    assert is_timm_swin_layout(timm_sd)
    back = convert_timm_swin_to_ours(timm_sd)
    expected = {f"backbone.{k}" for k in sd if not k.startswith("norm")}
    assert set(back) == expected
    for k, v in back.items():
        assert torch.equal(v, sd[k.removeprefix("backbone.")]), k


def test_microsoft_imagenet_file_loads_into_a_detector(tmp_path):
    """Plain keys + head + final norm + attn_mask; relative_position_index recomputed."""
    src = _ours()
    sd = {k: v.clone() for k, v in src.state_dict().items() if not k.startswith("norm")}
    for k in [k for k in sd if k.endswith("relative_position_index")]:
        sd[k] = torch.zeros_like(sd[k])  # stale values must not be used
    sd["layers.0.blocks.1.attn_mask"] = torch.zeros(4, 4, 4)
    sd["norm.weight"], sd["norm.bias"] = torch.ones(128), torch.zeros(128)
    sd["head.weight"], sd["head.bias"] = torch.zeros(10, 128), torch.zeros(10)
    assert not is_timm_swin_layout(sd)
    converted = convert_swin_imagenet_to_ours(sd)
    assert not any(
        k.startswith(("backbone.head", "backbone.norm.")) or "attn_mask" in k for k in converted
    )
    path = tmp_path / "swin_imagenet.pth"
    torch.save({"model": sd}, path)

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = _ours()

    det = Detector()
    with torch.no_grad():
        for b in det.backbone.modules():
            if hasattr(b, "relative_position_index"):
                b.relative_position_index.fill_(0)
    keys = load_swin_imagenet(det, path)
    assert keys.unexpected_keys == []
    assert sorted(keys.missing_keys) == [
        f"backbone.norm{i}.{p}" for i in (1, 2, 3) for p in ("bias", "weight")
    ]
    for k, v in src.state_dict().items():
        if not k.startswith("norm"):
            assert torch.equal(det.backbone.state_dict()[k], v), k  # incl. the recomputed index
    sd["patch_embed.proj.weight"] = torch.zeros(16, 3, 7, 7)
    with pytest.raises(
        ValueError, match=r"backbone.patch_embed.proj.weight: checkpoint \(16, 3, 7, 7\)"
    ):
        load_swin_imagenet(det, sd)


def test_odd_sizes_pad_and_give_ceil_strides():
    out = _ours()(torch.randn(2, 3, 70, 90))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p1": (2, 32, 9, 12),
        "p2": (2, 64, 5, 6),
        "p3": (2, 128, 3, 3),
    }


def test_use_checkpoint_recomputes_blocks_in_backward(monkeypatch):
    calls = []
    forward = SwinBlock.forward

    def counting_forward(self, *args):
        calls.append(1)
        return forward(self, *args)

    monkeypatch.setattr(SwinBlock, "forward", counting_forward)
    x = torch.randn(1, 3, 32, 32)
    plain = _ours().train()
    sum(v.sum() for v in plain(x).values()).backward()
    assert len(calls) == 8  # no recomputation without checkpointing
    calls.clear()
    model = _ours(use_checkpoint=True).train()
    out = model(x)
    assert len(calls) == 8
    sum(v.sum() for v in out.values()).backward()
    assert len(calls) == 16  # every block ran again in backward
    for (name, p), (_, q) in zip(model.named_parameters(), plain.named_parameters()):
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="out_indices"):
        SwinTransformer(**SMALL, out_indices=(4,))
    with pytest.raises(ValueError, match="depths"):
        SwinTransformer(embed_dim=16, depths=(2, 2), num_heads=(1,), window_size=2)


# ------------------------------------------------------------------------------ Swin-L layout
@pytest.fixture(scope="module")
def swinl_align():
    """The Swin-L Align model: Align R50 model config with the backbone/neck of ``mr_detr_swinl.py``
    (exactly what the project config does)."""
    model_cfg = LazyConfig.load(str(MODELS / "mr_detr_align_r50.py")).model
    swinl = LazyConfig.load(str(MODELS / "mr_detr_swinl.py")).model
    model_cfg.backbone = swinl.backbone
    model_cfg.neck.in_channels = swinl.neck.in_channels
    model_cfg.neck.in_features = swinl.neck.in_features
    model_cfg.num_queries = 900
    torch.manual_seed(0)
    return instantiate(model_cfg)


def test_swinl_align_layout_loads_with_no_missing_or_unexpected_keys(swinl_align):
    info = layout("mrdetr_align_swinl")
    state = fake_official_state_dict(info, period=1000)
    keys = load_official(swinl_align, state)
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    ours = swinl_align.state_dict()
    for key, _, _ in info["state_dict"]:
        if key.startswith("backbone."):
            assert torch.equal(ours[key], state[key]), key
    params = list(swinl_align.parameters())
    assert sum(p.numel() for p in params) == info["total_parameters"]
    assert sum(p.numel() for p in params if p.requires_grad) == info["trainable_parameters"]
    buffers = sum(b.numel() for n, b in swinl_align.named_buffers() if n in ours)
    assert buffers == info["buffer_elements"]
    assert all(ours[k].dtype == torch.int64 for k in info["buffer_keys"])


def test_swinl_forward_on_a_small_image(swinl_align):
    with torch.no_grad():
        out = swinl_align.backbone(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p1": (1, 384, 8, 8),
        "p2": (1, 768, 4, 4),
        "p3": (1, 1536, 2, 2),
    }
    assert all(torch.isfinite(v).all() for v in out.values())


def test_swinl_align_project_config_swaps_only_the_backbone():
    base = (
        REPO
        / "projects"
        / "mr_detr_deformable"
        / "configs"
        / "deformable_detr_r50_two_stage_12ep_plusplus.py"
    )
    if not base.is_file():
        pytest.skip(f"the Deformable 12ep project config it builds on is not there yet: {base}")
    cfg = LazyConfig.load(str(ALIGN_SWINL))
    assert cfg.model.backbone.embed_dim == 192 and list(cfg.model.backbone.depths) == [2, 2, 18, 2]
    assert list(cfg.model.neck.in_features) == ["p1", "p2", "p3"]
    assert cfg.model.num_queries == 900 and cfg.optimizer.weight_decay == 0.05
