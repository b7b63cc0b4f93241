"""The peer every model benchmark is timed against in the same run: Hugging Face transformers'
``DeformableDetrForObjectDetection`` (two-stage, box refinement), built from a config with random
weights and a randomly initialised ResNet-50 (no download), at the sizes of our model's config.

Needs the optional ``bench`` extra (``pip install mrdetr[bench]``, i.e. ``transformers``);
:func:`peer_unavailable_reason` says why it cannot be built.
"""

from __future__ import annotations

import os

import torch
from torch import nn

__all__ = ["build_peer", "peer_inputs", "peer_train_step", "peer_unavailable_reason"]

# Stages of the HF ResNet-50 that give strides 8, 16, 32 (our res3, res4, res5).
_RESNET_STAGES = ["stage2", "stage3", "stage4"]


def peer_unavailable_reason() -> str | None:
    """Why the peer cannot be built here (transformers missing), or None."""
    try:
        import transformers  # noqa: F401
    except ImportError as error:
        return f"transformers is not installed ({error}); pip install 'mrdetr[bench]'"
    return None


def build_peer(model_cfg) -> nn.Module:
    """HF Deformable DETR (two-stage, box refine) with the sizes of ``model_cfg`` (our R50 config).

    Args:
        model_cfg: the LazyConfig ``model`` node of ``configs/common/models/mr_detr_r50.py``: queries,
            classes, widths, layers, heads, levels and points are read from it.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub: everything is built locally
    from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection, ResNetConfig

    enc, dec = model_cfg.transformer.encoder, model_cfg.transformer.decoder
    config = DeformableDetrConfig(
        backbone_config=ResNetConfig(depths=[3, 4, 6, 3], out_features=_RESNET_STAGES),
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


def peer_inputs(image: torch.Tensor, mean, std, device) -> dict:
    """HF inputs of one 0..255 CHW image: normalised ``pixel_values`` and an all-valid mask."""
    mean = torch.tensor(mean).view(-1, 1, 1)
    std = torch.tensor(std).view(-1, 1, 1)
    pixels = ((image.float() - mean) / std)[None].to(device)
    return {"pixel_values": pixels, "pixel_mask": torch.ones_like(pixels[:, 0], dtype=torch.long)}


def peer_train_step(model: nn.Module, inputs: dict, boxes_xyxy, classes, size) -> None:
    """zero_grad + forward with the HF loss + backward, on the boxes of our training step."""
    h, w = size
    boxes = torch.as_tensor(boxes_xyxy, dtype=torch.float32)
    cxcywh = torch.stack(
        [(boxes[:, 0] + boxes[:, 2]) / 2 / w, (boxes[:, 1] + boxes[:, 3]) / 2 / h,
         (boxes[:, 2] - boxes[:, 0]) / w, (boxes[:, 3] - boxes[:, 1]) / h], dim=1,
    )  # fmt: skip
    device = inputs["pixel_values"].device
    labels = [{"class_labels": torch.as_tensor(classes).to(device), "boxes": cxcywh.to(device)}]
    model.train()
    model.zero_grad(set_to_none=True)
    model(**inputs, labels=labels).loss.backward()
