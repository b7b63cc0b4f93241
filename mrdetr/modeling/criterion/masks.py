"""Mask losses of Mr. DETR-Deformable-InstanceSeg (spec §3.6) and the criterion that adds them.

Per supervised mask (a matched (query, GT) pair), ``num_points`` points are sampled with PointRend's
uncertainty scheme (``oversample_ratio`` x random candidates, the ``importance_sample_ratio`` share with
the most uncertain logits, i.e. the smallest ``-|logit|``, plus uniform random points); labels are the
bilinearly sampled GT masks (padded to the batch size). ``loss_mask`` = BCE averaged over points, summed
over masks / normaliser; ``loss_dice`` = sum over masks of ``1 - (2 sum(p t) + 1) / (sum p + sum t + 1)``
/ normaliser. They use the **same** matches as the boxes of that prediction set: the final layer's
Hungarian indices for PRIMARY and the final layer's one-to-many indices for INSTRUCT / SEP_FFN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor
from torch.nn import functional as F

from mrdetr.modeling.matcher import MatchIndices, Targets
from mrdetr.modeling.matcher.utils import check_finite_predictions
from mrdetr.modeling.outputs import MrDETROutput, Predictions
from mrdetr.modeling.routes import Route

from .criterion import MrDETRCriterion, named_predictions
from .naming import ROUTE_LOSSES, layer_suffix, route_loss_spec
from .weights import build_weight_dict

__all__ = [
    "DEFAULT_MASK_WEIGHTS",
    "MASK_LOSS_SUFFIX",
    "MrDETRMaskCriterion",
    "build_insseg_weight_dict",
    "dice_loss",
    "point_sample",
    "sample_uncertain_points",
    "sigmoid_ce_loss",
]

# Suffix of the mask terms of each route (official names: loss_mask, loss_mask_o2m, loss_mask_sep).
MASK_LOSS_SUFFIX = {Route.PRIMARY: "", Route.INSTRUCT: "_o2m", Route.SEP_FFN: "_sep"}


def point_sample(inputs: Tensor, coords: Tensor) -> Tensor:
    """Bilinear values of ``inputs`` [M, C, H, W] at normalised points ``coords`` [M, P, 2] (x, y in
    [0, 1], ``align_corners=False``, zero padding) -> [M, C, P]."""
    out = F.grid_sample(inputs, 2.0 * coords.unsqueeze(2) - 1.0, align_corners=False)
    return out.squeeze(3)


def sample_uncertain_points(
    logits: Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    uncertainty: Callable[[Tensor], Tensor] = lambda x: -x.abs(),
    generator: torch.Generator | None = None,
) -> Tensor:
    """PointRend's training point sampling.

    Args:
        logits: [M, 1, H, W] mask logits.
        num_points: P points per mask.
        oversample_ratio: candidates = ``int(P * oversample_ratio)`` uniform points.
        importance_sample_ratio: share of P taken as the most uncertain candidates.
        uncertainty: maps sampled logits [M, 1, K] to uncertainties (higher = more uncertain).
        generator: random generator (None: the global one, on the logits' device).

    Returns:
        [M, P, 2] normalised (x, y) coordinates.
    """
    m = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    device = logits.device
    coords = torch.rand(m, num_sampled, 2, device=device, generator=generator)
    scores = uncertainty(point_sample(logits, coords))[:, 0]
    num_uncertain = int(importance_sample_ratio * num_points)
    idx = torch.topk(scores, k=num_uncertain, dim=1).indices
    coords = torch.gather(coords, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        extra = torch.rand(m, num_random, 2, device=device, generator=generator)
        coords = torch.cat([coords, extra], 1)
    return coords


def sigmoid_ce_loss(logits: Tensor, labels: Tensor, normalizer: float) -> Tensor:
    """BCE-with-logits averaged over points [M, P], summed over masks, divided by ``normalizer``."""
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return loss.mean(1).sum() / normalizer


def dice_loss(logits: Tensor, labels: Tensor, normalizer: float, smooth: float = 1.0) -> Tensor:
    """``sum_masks (1 - (2 sum(p t) + s) / (sum p + sum t + s)) / normalizer`` with p = sigmoid(logits)."""
    p = logits.sigmoid()
    num = 2 * (p * labels).sum(-1) + smooth
    den = p.sum(-1) + labels.sum(-1) + smooth
    return (1 - num / den).sum() / normalizer


class MrDETRMaskCriterion(MrDETRCriterion):
    """:class:`MrDETRCriterion` plus ``loss_mask``/``loss_dice`` on the final layer of every route.

    Extra args (all other args as :class:`MrDETRCriterion`):
        num_points: points sampled per mask (official 112 * 112 = 12544).
        oversample_ratio: PointRend oversampling (3).
        importance_sample_ratio: share of uncertain points (0.75).
        dice_smooth: the +1 of the dice ratio.

    Call with ``pred_masks`` ({route: [B, Q, h, w] mask logits of its final layer}) and ``target_masks``
    (B bool/float tensors [n_b, H, W] in the padded batch frame, rows aligned with the targets).
    """

    def __init__(
        self,
        *,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        dice_smooth: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_points < 1 or oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
            raise ValueError(
                "MrDETRMaskCriterion: need num_points >= 1, oversample_ratio >= 1 and "
                f"0 <= importance_sample_ratio <= 1, got {num_points}, {oversample_ratio}, "
                f"{importance_sample_ratio}"
            )
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.dice_smooth = dice_smooth

    def forward(
        self,
        outputs: MrDETROutput,
        targets: Targets,
        generator: torch.Generator | None = None,
        *,
        pred_masks: dict[Route, Tensor] | None = None,
        target_masks: list[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Every unweighted box term (as :meth:`MrDETRCriterion.forward`) plus the mask terms.

        Args:
            outputs: training outputs of the model.
            targets: B dicts with ``"labels"`` and ``"boxes"``.
            generator: random generator of the one-to-many subsampling and the point sampling.
            pred_masks: {route: [B, Q, h, w] mask logits of its final layer}; None: no mask terms.
            target_masks: B tensors [n_b, H, W] (bool or float, padded batch frame).
        """
        for route in list(outputs.routes) + list(outputs.encoder):
            route_loss_spec(route)
        check_finite_predictions(named_predictions(outputs))
        reference = self._any_prediction(outputs)
        targets = self.prepare_targets(targets, reference)
        num_boxes = self.num_boxes(targets, reference.device)
        if pred_masks and (target_masks is None or len(target_masks) != len(targets)):
            raise ValueError(
                "MrDETRMaskCriterion: pred_masks given but target_masks is missing or has "
                f"{None if target_masks is None else len(target_masks)} entries for "
                f"{len(targets)} images"
            )
        losses: dict[str, Tensor] = {}
        final_indices: dict[Route, list[MatchIndices]] = {}
        for route in ROUTE_LOSSES:
            if route in outputs.routes:
                layers = outputs.routes[route].layers
                terms, final_indices[route] = self.route_losses_with_indices(
                    route, layers, targets, num_boxes, generator
                )
                losses.update(terms)
        for route in ROUTE_LOSSES:
            if route in outputs.encoder:
                losses.update(
                    self.encoder_losses(route, outputs.encoder[route], targets, num_boxes)
                )
        for route, masks in (pred_masks or {}).items():
            if route not in final_indices:
                raise KeyError(
                    f"MrDETRMaskCriterion: masks given for {route.name}, which has no output"
                )
            scale = self.one_to_many_normalizer_scale if route_loss_spec(route).one_to_many else 1.0
            losses.update(
                self.mask_losses(
                    masks,
                    target_masks,
                    final_indices[route],
                    num_boxes * scale,
                    MASK_LOSS_SUFFIX[route],
                    generator,
                )
            )
        return losses

    def route_losses(
        self,
        route: Route,
        layers: list[Predictions],
        targets: Targets,
        num_boxes: float,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Terms of every decoder layer of ``route`` (see :meth:`route_losses_with_indices`)."""
        return self.route_losses_with_indices(route, layers, targets, num_boxes, generator)[0]

    def route_losses_with_indices(
        self,
        route: Route,
        layers: list[Predictions],
        targets: Targets,
        num_boxes: float,
        generator: torch.Generator | None = None,
    ) -> tuple[dict[str, Tensor], list[MatchIndices]]:
        """As :meth:`MrDETRCriterion.route_losses`, also returning the final layer's matches."""
        spec = route_loss_spec(route)
        normalizer = (
            num_boxes * self.one_to_many_normalizer_scale if spec.one_to_many else num_boxes
        )
        losses: dict[str, Tensor] = {}
        indices: list[MatchIndices] = []
        for layer, pred in enumerate(layers):
            if spec.one_to_many:
                indices = self.one_to_many_matcher(pred.logits, pred.boxes, targets, generator)
            else:
                indices = self.matcher(pred.logits, pred.boxes, targets)
            suffix = layer_suffix(route, layer, len(layers))
            losses.update(
                self.supervise(
                    pred, targets, indices, normalizer, suffix, one_to_many=spec.one_to_many
                )
            )
        return losses, indices

    def mask_losses(
        self,
        pred_masks: Tensor,
        target_masks: list[Tensor],
        indices: list[MatchIndices],
        normalizer: float,
        suffix: str,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """``loss_mask{suffix}`` and ``loss_dice{suffix}`` of one prediction set.

        Args:
            pred_masks: [B, Q, h, w] mask logits.
            target_masks: B tensors [n_b, H, W] (padded batch frame).
            indices: B pairs ``(query_idx, gt_idx)``.
            normalizer: divides both terms.
            suffix: appended to the names.
            generator: random generator of the point sampling.
        """
        batch_idx, query_idx = self._query_index(indices)
        with torch.autocast(device_type=pred_masks.device.type, enabled=False):
            if query_idx.numel() == 0:
                zero = pred_masks.float().sum() * 0.0  # keeps the mask head in the graph (DDP)
                return {f"loss_mask{suffix}": zero, f"loss_dice{suffix}": zero.clone()}
            src = pred_masks.float()[batch_idx, query_idx].unsqueeze(1)
            tgt = torch.cat(
                [t.to(src.device, torch.float32)[j] for t, (_, j) in zip(target_masks, indices)]
            ).unsqueeze(1)
            with torch.no_grad():
                coords = sample_uncertain_points(
                    src,
                    self.num_points,
                    self.oversample_ratio,
                    self.importance_sample_ratio,
                    generator=generator,
                )
                labels = point_sample(tgt, coords).squeeze(1)
            logits = point_sample(src, coords).squeeze(1)
            return {
                f"loss_mask{suffix}": sigmoid_ce_loss(logits, labels, normalizer),
                f"loss_dice{suffix}": dice_loss(logits, labels, normalizer, self.dice_smooth),
            }


DEFAULT_MASK_WEIGHTS = {"loss_mask": 5.0, "loss_dice": 2.0}


def build_insseg_weight_dict(
    *,
    mask: Mapping[str, float] | None = None,
    mask_routes: Iterable[Route] = (Route.PRIMARY, Route.INSTRUCT, Route.SEP_FFN),
    **box_weights,
) -> dict[str, float]:
    """Weights of the InsSeg terms: :func:`build_weight_dict` (``**box_weights``) plus the mask terms.

    Args:
        mask: weights of ``loss_mask`` / ``loss_dice`` (official 5 / 2), used for every route.
        mask_routes: routes whose final layer gets mask terms (suffixes ``""``, ``_o2m``, ``_sep``).
        **box_weights: arguments of :func:`build_weight_dict`.

    Returns:
        ``{loss name: weight}``: 66 terms for the official InsSeg model (60 box + 6 mask).
    """
    weight_dict = build_weight_dict(**box_weights)
    mask = dict(DEFAULT_MASK_WEIGHTS if mask is None else mask)
    for route in mask_routes:
        weight_dict.update(
            {f"{name}{MASK_LOSS_SUFFIX[route]}": float(w) for name, w in mask.items()}
        )
    return weight_dict
