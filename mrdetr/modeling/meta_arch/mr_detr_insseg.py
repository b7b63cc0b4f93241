"""Mr. DETR-Deformable-InstanceSeg: Mr. DETR plus a DETR-style mask head.

The mask head runs on the final hidden states of every route that runs (PRIMARY at eval; all three in
training), over the coarsest (stride 64) encoder memory level, with FPN maps projected from res5/res4/res3.
The variant overrides five hooks of :class:`MrDETR` and no other method: :meth:`extend_encoded` keeps
the backbone maps, :meth:`run_route` adds the final layer's mask logits, :meth:`criterion_inputs` hands
them and the mask targets to the criterion, and :meth:`raw_output` / :meth:`instance_fields` carry the
masks to the detections.

Where it differs from the official InsSeg ``deformable_detr.py``: the query count and the attention
heads/width come from the config (the official mask path hard-codes ``.view(..., 300, ...)`` and
``8, 256``); at inference the masks are cropped to the image region of the padded batch before resizing
to (height, width) (the official code resizes the padded-frame masks straight to the output size), and
masks are dropped together with their empty boxes (the official post-processing drops empty boxes but
keeps every mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...structures import Boxes, ImageList, Instances
from ..outputs import MrDETROutput, RawOutput, RouteOutput
from ..postprocessing import TopKDetections
from ..routes import Route
from ..transformer import EncodedImage
from .mr_detr import MrDETR

__all__ = [
    "MrDETRInstanceSeg",
    "SegEncodedImage",
    "SegRawOutput",
    "SegRouteOutput",
    "prepare_target_masks",
    "resize_mask_logits",
]


@dataclass
class SegEncodedImage(EncodedImage):
    """:class:`EncodedImage` plus the backbone maps the mask head's FPN inputs come from.

    Attributes:
        backbone_features: ``{name: [B, C, H, W]}`` backbone outputs.
    """

    backbone_features: dict[str, Tensor] | None = None


@dataclass
class SegRouteOutput(RouteOutput):
    """:class:`RouteOutput` plus the final layer's mask logits.

    Attributes:
        pred_masks: [B, Q, H/16, W/16] mask logits (padded-batch frame).
    """

    pred_masks: Tensor | None = None


@dataclass
class SegRawOutput(RawOutput):
    """:class:`RawOutput` plus mask logits [B, Q, h, w] and the padded batch size (H, W)."""

    pred_masks: Tensor | None = None
    padded_size: tuple[int, int] = (0, 0)


class MrDETRInstanceSeg(MrDETR):
    """Mr. DETR with instance masks.

    Args:
        seg_input_proj: projects backbone maps to the three FPN inputs of the mask head (coarse to fine).
        bbox_attention: per-query attention maps over the stride-64 memory (``MHAttentionMap``), or
            None when ``mask_head`` is a query-embedding head.
        mask_head: ``MaskHeadSmallConv`` (official, with ``bbox_attention``) producing one logit map
            per query, or ``QueryMaskHead`` (``bbox_attention=None``): ``mask_head(hidden, memory,
            fpns) -> [B, Q, H, W]``.
        mask_threshold: mask logit above which a pixel is foreground at inference (0 = probability 0.5).
        **kwargs: :class:`MrDETR` arguments; the criterion must accept ``pred_masks`` and
            ``target_masks`` (``MrDETRMaskCriterion``).
    """

    def __init__(
        self,
        *,
        seg_input_proj: nn.Module,
        bbox_attention: nn.Module | None,
        mask_head: nn.Module,
        mask_threshold: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.bbox_attention = bbox_attention
        self.mask_head = mask_head
        self.seg_input_proj = seg_input_proj
        self.mask_threshold = mask_threshold

    # ----------------------------------------------------------------------------------- hooks
    def extend_encoded(
        self, encoded: EncodedImage, backbone_features: dict[str, Tensor]
    ) -> SegEncodedImage:
        """Keep the backbone maps that the mask head's FPN inputs come from."""
        return SegEncodedImage(**_fields(encoded), backbone_features=backbone_features)

    def mask_logits(self, encoded: SegEncodedImage, hidden: Tensor) -> Tensor:
        """Mask logits of queries ``hidden`` [B, Q, d] -> [B, Q, H/16, W/16]."""
        levels = encoded.levels
        h, w = levels.shapes[-1]
        start = encoded.memory.shape[1] - h * w
        b, q = hidden.shape[:2]
        memory = encoded.memory[:, start:].transpose(1, 2).reshape(b, -1, h, w)
        fpns = self.seg_input_proj(encoded.backbone_features)
        if self.bbox_attention is None:  # query-embedding head: MLP(query) . pixel embeddings
            return self.mask_head(hidden, memory, fpns)
        padding = levels.padding_mask[:, start:].view(b, h, w)
        attention = self.bbox_attention(hidden, memory, mask=padding)
        masks = self.mask_head(memory, attention, fpns)
        return masks.view(b, q, masks.shape[-2], masks.shape[-1])

    def run_route(self, encoded: EncodedImage, route: Route, box_logits: Tensor, *args, **kwargs):
        """As :meth:`MrDETR.run_route`, adding the final layer's mask logits (``SegRouteOutput``)."""
        out = super().run_route(encoded, route, box_logits, *args, **kwargs)
        return SegRouteOutput(**_fields(out), pred_masks=self.mask_logits(encoded, out.hidden[-1]))

    def criterion_inputs(self, outputs: MrDETROutput, batched_inputs: list[dict]) -> dict:
        """Each route's final-layer mask logits and the GT masks in the padded batch frame, for
        ``loss_mask`` / ``loss_dice`` (``_o2m``, ``_sep``) of ``MrDETRMaskCriterion``."""
        return {
            "pred_masks": {route: out.pred_masks for route, out in outputs.routes.items()},
            "target_masks": prepare_target_masks(
                batched_inputs, self.device, self.size_divisibility
            ),
        }

    def raw_output(self, out: MrDETROutput) -> SegRawOutput:
        """As :meth:`MrDETR.raw_output`, plus the primary route's mask logits [B, Q, h, w] and the
        padded batch size."""
        raw = super().raw_output(out)
        return SegRawOutput(
            **_fields(raw),
            pred_masks=out.routes[Route.PRIMARY].pred_masks,
            padded_size=ImageList.padded_size(out.image_sizes, self.size_divisibility),
        )

    def instance_fields(
        self, raw: SegRawOutput, top: TopKDetections, image: int, output_size: tuple[int, int]
    ) -> dict[str, Tensor]:
        """``pred_masks``: bool [K, height, width] masks of the top-K detections' queries (empty
        boxes are later dropped together with their masks)."""
        masks = raw.pred_masks[image, top.queries[image]]
        image_size = raw.image_sizes[image]
        return {"pred_masks": self.paste_masks(masks, raw.padded_size, image_size, output_size)}

    def paste_masks(
        self,
        mask_logits: Tensor,
        padded_size: tuple[int, int],
        image_size: tuple[int, int],
        output_size: tuple[int, int],
    ) -> Tensor:
        """Mask logits [K, h, w] of the padded batch -> bool masks [K, out_h, out_w] of one image,
        thresholded at ``mask_threshold`` (see :func:`resize_mask_logits`)."""
        return resize_mask_logits(mask_logits, padded_size, image_size, output_size) > (
            self.mask_threshold
        )


def _fields(obj) -> dict:
    """The dataclass fields of ``obj`` by name, values as they are (not copied)."""
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


def resize_mask_logits(
    mask_logits: Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
) -> Tensor:
    """Mask logits [K, h, w] of the padded batch -> logits [K, out_h, out_w] of one image.

    The logits are resized to the padded batch size, cropped to the image's own (h, w) region and
    resized to the output size (bilinear).
    """
    if mask_logits.shape[0] == 0:
        return mask_logits.new_zeros((0, *output_size))
    x = F.interpolate(mask_logits[:, None], size=padded_size, mode="bilinear", align_corners=False)
    x = x[:, :, : image_size[0], : image_size[1]]
    return F.interpolate(x, size=output_size, mode="bilinear", align_corners=False)[:, 0]


def prepare_target_masks(
    batched_inputs: list[dict], device: torch.device, size_divisibility: int = 0
) -> list[Tensor]:
    """GT masks of each image, padded to the padded batch size and aligned with ``prepare_targets``.

    Each ``instances`` must hold ``gt_masks`` bool [n, h, w] (h, w = the image's size, n = number of
    boxes). Rows whose box ``prepare_targets`` drops (empty after clipping) are dropped too. The
    masks are padded exactly as the model pads the images (``size_divisibility``), so that the
    predicted masks (which cover the padded batch) and the targets share one normalised frame.

    Returns:
        B float tensors [n_b', H, W] (H, W = the padded batch size).
    """
    height, width = ImageList.padded_size(
        [tuple(x["image"].shape[-2:]) for x in batched_inputs], size_divisibility
    )
    out = []
    for i, item in enumerate(batched_inputs):
        inst: Instances = item["instances"]
        h, w = int(item["image"].shape[-2]), int(item["image"].shape[-1])
        if not inst.has("gt_masks"):
            raise KeyError(
                f"batched_inputs[{i}]['instances'] has no 'gt_masks': instance segmentation needs "
                "bool masks [n, H, W] (load the dataset with mask_on=True)"
            )
        masks = torch.as_tensor(inst.gt_masks)
        n = len(inst.gt_boxes)
        if masks.dim() != 3 or tuple(masks.shape) != (n, h, w):
            raise ValueError(
                f"batched_inputs[{i}]: gt_masks must have shape ({n}, {h}, {w}) (boxes, image "
                f"height, width), got {tuple(masks.shape)}"
            )
        clipped = Boxes(inst.gt_boxes.tensor.to(torch.float32).clone())
        clipped.clip((h, w))
        keep = clipped.nonempty()
        masks = masks[keep.cpu()].to(device, torch.float32)
        out.append(F.pad(masks, (0, width - w, 0, height - h)))
    return out
