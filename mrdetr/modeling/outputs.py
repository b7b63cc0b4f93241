"""Typed outputs of the Mr. DETR model: per-route predictions, training outputs, eval outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from .routes import Route


@dataclass
class Predictions:
    """Class logits and boxes of one set of queries (one decoder layer, or one encoder head).

    Attributes:
        logits: [B, Q, C] class logits (pre-sigmoid).
        boxes: [B, Q, 4] normalised (cx, cy, w, h) in [0, 1] of the unpadded image.
    """

    logits: Tensor
    boxes: Tensor


@dataclass
class EncoderPredictions(Predictions):
    """Dense predictions of a two-stage encoder head over all N encoder tokens.

    Attributes:
        logits: [B, N, C].
        boxes: [B, N, 4] sigmoid of (head output + anchor logit); invalid tokens are ``sigmoid(+inf)=1``.
        anchors: [B, N, 4] the anchor boxes (sigmoid of the anchor logits; invalid/padded anchors are 1.0),
            used by the Deformable criterion's encoder matcher.
    """

    anchors: Tensor | None = None


@dataclass
class RouteOutput:
    """Per-layer outputs of one decoder route.

    Attributes:
        layers: D predictions, layer 0 first; ``layers[-1]`` is the final layer.
        hidden: [D, B, Q, d] decoder hidden states.
        references: [D, B, Q, 4] per-layer reference boxes as returned by the decoder
            (look-forward-twice: undetached refined boxes).
        init_reference: [B, Q, 4] sigmoided initial reference boxes of this route.
    """

    layers: list[Predictions]
    hidden: Tensor
    references: Tensor
    init_reference: Tensor


@dataclass(frozen=True)
class DNMeta:
    """Layout of the DN queries of one batch (built by ``denoising.ContrastiveDenoising``; it lives
    here because :class:`MrDETROutput` carries it to the criterion).

    Attributes:
        single_padding: ``2m`` slots per group (m = largest GT count of the batch).
        num_groups: G.
        num_dn_queries: ``P = single_padding * num_groups``.
    """

    single_padding: int
    num_groups: int

    @property
    def num_dn_queries(self) -> int:
        return self.single_padding * self.num_groups

    @property
    def max_gt(self) -> int:
        """m, the number of slots per positive (or negative) block."""
        return self.single_padding // 2


@dataclass
class MrDETROutput:
    """Everything the criterion needs from one training forward.

    Attributes:
        routes: decoder outputs per route that ran (PRIMARY always; aux routes in training).
        encoder: dense encoder-head predictions per route that owns an encoder head
            (``Route.PRIMARY`` -> loss suffix ``_enc``, ``Route.INSTRUCT`` -> ``_enc_o2m``).
        image_sizes: (h, w) of each unpadded input image.
        denoising: per route, the D per-layer predictions of the P denoising queries (DINO/Align in
            training; empty when no DN query was built).
        dn_meta: layout of the denoising queries, or None when none was built.
    """

    routes: dict[Route, RouteOutput]
    encoder: dict[Route, EncoderPredictions] = field(default_factory=dict)
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    denoising: dict[Route, list[Predictions]] = field(default_factory=dict)
    dn_meta: DNMeta | None = None


@dataclass
class RawOutput:
    """What ``MrDETR.forward_raw`` returns at eval: the tensors handed to post-processing.

    Attributes:
        pred_logits: [B, Q, C] final-layer logits after the eval-time score fusion.
        pred_boxes: [B, Q, 4] final boxes, normalised cxcywh.
        image_sizes: (h, w) of each unpadded (resized) input image.
    """

    pred_logits: Tensor
    pred_boxes: Tensor
    image_sizes: list[tuple[int, int]]
