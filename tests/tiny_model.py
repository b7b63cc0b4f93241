"""A tiny Mr. DETR (d=32, 2+2 layers, 30 queries, narrow R50) for fast CPU tests."""

from __future__ import annotations

from pathlib import Path

import torch

from mrdetr.config import LazyConfig, instantiate
from mrdetr.structures import Boxes, Instances

REPO = Path(__file__).resolve().parents[1]
MODEL_CONFIG = REPO / "configs" / "common" / "models" / "mr_detr_r50.py"
TINY_CONFIG = REPO / "tests" / "configs" / "tiny_model.py"  # the same model as a config file

TINY_OVERRIDES = [
    "model.embed_dim=32",
    "model.num_classes=5",
    "model.num_queries=30",
    "model.select_box_nums_for_evaluation=20",
    "model.backbone.stem_out_channels=8",
    "model.backbone.res2_out_channels=16",
    "model.neck.in_channels=[32,64,128]",
    "model.neck.num_groups=8",
    "model.position_embedding.num_pos_feats=16",
    "model.transformer.query_pos_feats=16",
    "model.transformer.encoder.num_layers=2",
    "model.transformer.encoder.num_heads=2",
    "model.transformer.encoder.ffn_dim=64",
    "model.transformer.decoder.num_layers=2",
    "model.transformer.decoder.num_heads=2",
    "model.transformer.decoder.ffn_dim=64",
    "model.transformer.decoder.num_instruction_tokens=3",
]


def tiny_cfg(extra: list[str] | None = None):
    cfg = LazyConfig.load(str(MODEL_CONFIG))
    return LazyConfig.apply_overrides(cfg, TINY_OVERRIDES + list(extra or []))


def tiny_model(extra: list[str] | None = None, seed: int = 0):
    torch.manual_seed(seed)
    return instantiate(tiny_cfg(extra).model)


def tiny_batch(num_boxes=(2, 0), sizes=((64, 80), (72, 64)), seed: int = 0) -> list[dict]:
    """Random images with random boxes (``num_boxes[i]`` per image; 0 = an image without objects)."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for n, (h, w) in zip(num_boxes, sizes):
        image = torch.randint(0, 256, (3, h, w), generator=g).float()
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
        wh = 8 + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.4, h * 0.4])
        boxes = torch.cat([xy, xy + wh], 1)
        classes = torch.randint(0, 5, (n,), generator=g)
        inst = Instances((h, w), gt_boxes=Boxes(boxes), gt_classes=classes)
        batch.append({"image": image, "height": h, "width": w, "instances": inst})
    return batch


def save_tiny_checkpoint(path: Path, seed: int) -> Path:
    """Save ``{"model": state_dict}`` of the tiny config file's model (weights drawn with ``seed``)."""
    torch.manual_seed(seed)
    model = instantiate(LazyConfig.load(str(TINY_CONFIG)).model)
    torch.save({"model": model.state_dict()}, path)
    return path
