"""The peer every model benchmark is timed against in the same run: Hugging Face transformers'
``DeformableDetrForObjectDetection`` (two-stage, box refinement), built from a config with random
weights and a randomly initialised HF ResNet (no download), at the sizes of our model's config
(backbone blocks and widths, transformer widths, layers, heads, levels, points, queries).

Needs the optional ``bench`` extra (``pip install mrdetr[bench]``, i.e. ``transformers``);
:func:`peer_unavailable_reason` says why it cannot be built.
"""

from __future__ import annotations

import os

import torch
from torch import nn

__all__ = [
    "build_peer",
    "peer_inputs",
    "peer_labels",
    "peer_train_step",
    "peer_unavailable_reason",
]

# Stages of the HF ResNet-50 that give strides 8, 16, 32 (our res3, res4, res5).
_RESNET_STAGES = ["stage2", "stage3", "stage4"]
_RESNET_BLOCKS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}  # bottleneck blocks per stage


def peer_unavailable_reason() -> str | None:
    """Why the peer cannot be built here (transformers missing), or None."""
    try:
        import transformers  # noqa: F401
    except ImportError as error:
        return f"transformers is not installed ({error}); pip install 'mrdetr[bench]'"
    return None


def build_peer(model_cfg) -> nn.Module:
    """HF Deformable DETR (two-stage, box refine) with the sizes of ``model_cfg``.

    Args:
        model_cfg: the LazyConfig ``model`` node of a config built on
            ``configs/common/models/mr_detr_r50.py`` (ResNet backbone): backbone blocks and widths,
            queries, classes, widths, layers, heads, levels and points are read from it.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub: everything is built locally
    from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection, ResNetConfig

    enc, dec, backbone = (
        model_cfg.transformer.encoder,
        model_cfg.transformer.decoder,
        model_cfg.backbone,
    )
    res2 = backbone.res2_out_channels
    resnet = ResNetConfig(
        embedding_size=backbone.stem_out_channels,
        hidden_sizes=[res2, 2 * res2, 4 * res2, 8 * res2],
        depths=list(backbone.get("num_blocks") or _RESNET_BLOCKS[backbone.depth]),
        layer_type="bottleneck",
        out_features=_RESNET_STAGES,
    )
    config = DeformableDetrConfig(
        backbone_config=resnet,
        num_labels=model_cfg.num_classes,
        num_queries=model_cfg.num_queries,
        two_stage=True,
        two_stage_num_proposals=model_cfg.num_queries,
        with_box_refine=True,
        d_model=model_cfg.embed_dim,
        encoder_layers=enc.num_layers,
        decoder_layers=dec.num_layers,
        encoder_ffn_dim=enc.ffn_dim,
        decoder_ffn_dim=dec.ffn_dim,
        encoder_attention_heads=enc.num_heads,
        decoder_attention_heads=dec.num_heads,
        num_feature_levels=model_cfg.transformer.num_feature_levels,
        encoder_n_points=enc.num_points,
        decoder_n_points=dec.num_points,
        dropout=0.0,
    )
    torch.manual_seed(0)
    return DeformableDetrForObjectDetection(config)


def peer_inputs(images: list[torch.Tensor], mean, std, device) -> dict:
    """HF inputs of 0..255 CHW images of one size: normalised ``pixel_values`` [B, 3, H, W] and an
    all-valid ``pixel_mask`` [B, H, W]."""
    mean = torch.tensor(mean).view(-1, 1, 1)
    std = torch.tensor(std).view(-1, 1, 1)
    pixels = torch.stack([(image.float() - mean) / std for image in images]).to(device)
    return {"pixel_values": pixels, "pixel_mask": torch.ones_like(pixels[:, 0], dtype=torch.long)}


def peer_labels(targets: list[tuple], size: tuple[int, int], device) -> list[dict]:
    """HF labels (normalised cxcywh boxes) of ``(boxes_xyxy_abs, classes)`` per image of ``size``."""
    h, w = size
    labels = []
    for boxes_xyxy, classes in targets:
        b = torch.as_tensor(boxes_xyxy, dtype=torch.float32)
        cxcywh = torch.stack(
            [(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
             (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], dim=1,
        )  # fmt: skip
        labels.append(
            {"class_labels": torch.as_tensor(classes).to(device), "boxes": cxcywh.to(device)}
        )
    return labels


def peer_train_step(model: nn.Module, inputs: dict, labels: list[dict]) -> None:
    """zero_grad + forward with the HF loss (Hungarian matching, focal + L1 + GIoU) + backward."""
    model.train()
    model.zero_grad(set_to_none=True)
    model(**inputs, labels=labels).loss.backward()
