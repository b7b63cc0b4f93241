"""The Mr. DETR set criterion: matching per route and layer, focal/L1/GIoU losses.

The criterion returns the **unweighted** loss terms under their official names; weights are applied
afterwards with :func:`mrdetr.modeling.criterion.weights.apply_weights`.

Hooks for the variants (each overrides one, none re-writes :meth:`MrDETRCriterion.forward`):

- :meth:`MrDETRCriterion.class_loss` (Align: IA-BCE with rank weights). It receives the matched
  indices and whether the prediction set is one-to-many, and may return per-pair weights that
  :meth:`MrDETRCriterion.supervise` hands to the GIoU loss.
- :meth:`MrDETRCriterion.extra_losses` (DINO/Align: denoising terms; InsSeg: mask terms). It runs
  after the box terms with a :class:`LossContext`: the prepared targets, the batch's ``num_boxes``
  (one ``all_reduce`` per step) and the final layer's matches of every route.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mrdetr.modeling.matcher import HungarianMatcher, MatchIndices, OneToManyAssigner, Targets
from mrdetr.modeling.matcher.utils import check_finite_predictions, check_targets
from mrdetr.modeling.outputs import EncoderPredictions, MrDETROutput, Predictions
from mrdetr.modeling.routes import ROUTES, Route, route_spec
from mrdetr.utils.events import current_event_storage

from .losses import giou_loss, l1_loss, sigmoid_focal_loss
from .naming import encoder_suffix, layer_suffix

__all__ = ["LossContext", "MrDETRCriterion", "RouteLosses", "named_predictions"]


@dataclass
class RouteLosses:
    """The terms of one decoder route and the matches of its final layer.

    Attributes:
        terms: ``{name: scalar}`` of every layer of the route.
        final_matches: B pairs ``(query_idx, gt_idx)`` of the final layer (the matches that the mask
            terms of that route reuse).
    """

    terms: dict[str, Tensor]
    final_matches: list[MatchIndices]


@dataclass
class LossContext:
    """What :meth:`MrDETRCriterion.forward` prepared for the box terms, handed to ``extra_losses``.

    Attributes:
        targets: B prepared targets (on the predictions' device, see ``prepare_targets``).
        num_boxes: the batch's GT count (averaged over processes, >= 1).
        final_matches: per decoder route that ran, the matches of its final layer.
        generator: the random generator of this forward (None: the global one).
    """

    targets: list[dict[str, Tensor]]
    num_boxes: float
    final_matches: dict[Route, list[MatchIndices]]
    generator: torch.Generator | None = None


def named_predictions(outputs: MrDETROutput) -> Iterator[tuple[str, Tensor]]:
    """Every logits/boxes tensor the criterion matches or supervises, named by route and layer.

    Names read like ``"PRIMARY route, decoder layer 5: boxes"`` or ``"INSTRUCT encoder head:
    logits"``; they are what :func:`check_finite_predictions` reports.
    """
    for route, route_output in outputs.routes.items():
        for layer, pred in enumerate(route_output.layers):
            where = f"{route.name} route, decoder layer {layer}"
            yield f"{where}: logits", pred.logits
            yield f"{where}: boxes", pred.boxes
    for route, pred in outputs.encoder.items():
        yield f"{route.name} encoder head: logits", pred.logits
        yield f"{route.name} encoder head: boxes", pred.boxes
        if pred.anchors is not None:
            yield f"{route.name} encoder head: anchors", pred.anchors
    for route, layers in outputs.denoising.items():
        for layer, pred in enumerate(layers):
            yield f"{route.name} route, denoising layer {layer}: boxes", pred.boxes


class MrDETRCriterion(nn.Module):
    """Losses of every route, decoder layer and encoder head of a Mr. DETR training forward.

    - PRIMARY layers: Hungarian matching per layer, normaliser ``num_boxes``.
    - INSTRUCT / SEP_FFN layers: fresh one-to-many assignment per layer, normaliser
      ``num_boxes * one_to_many_normalizer_scale``.
    - Encoder heads: class-agnostic targets (every label 0), matched by ``encoder_matcher`` either on the
      anchors (``encoder_match_on_anchors``, the Deformable variant) or on the predicted encoder boxes;
      the losses always use the predicted boxes. Normaliser ``num_boxes``.

    ``num_boxes`` is the number of GT boxes in the batch, averaged over processes when
    ``torch.distributed`` is initialised, clamped to >= 1. All losses are computed in float32.

    Args:
        num_classes: number of classes C (width of the class logits).
        matcher: one-to-one matcher of the primary route.
        one_to_many_matcher: assigner of the one-to-many routes.
        encoder_matcher: matcher of the encoder heads.
        focal_alpha: alpha of the sigmoid focal loss.
        focal_gamma: gamma of the sigmoid focal loss.
        encoder_match_on_anchors: match the encoder heads on their anchors instead of their boxes.
        one_to_many_normalizer_scale: multiplies ``num_boxes`` for the one-to-many routes
            (1 Deformable/InsSeg, 3 DINO/Align).
        log_route_stats: put the final layer's one-to-many matches of each step into the training
            event storage: ``o2m/<route>/positive_fraction`` (distinct matched queries / queries,
            averaged over images) and ``o2m/<route>/matches_per_object``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        matcher: HungarianMatcher,
        one_to_many_matcher: OneToManyAssigner,
        encoder_matcher: HungarianMatcher,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        encoder_match_on_anchors: bool = True,
        one_to_many_normalizer_scale: float = 1.0,
        log_route_stats: bool = False,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"MrDETRCriterion: num_classes must be >= 1, got {num_classes}")
        if one_to_many_normalizer_scale <= 0:
            raise ValueError(
                "MrDETRCriterion: one_to_many_normalizer_scale must be > 0, got "
                f"{one_to_many_normalizer_scale}"
            )
        self.num_classes = num_classes
        self.matcher = matcher
        self.one_to_many_matcher = one_to_many_matcher
        self.encoder_matcher = encoder_matcher
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.encoder_match_on_anchors = encoder_match_on_anchors
        self.one_to_many_normalizer_scale = one_to_many_normalizer_scale
        self.log_route_stats = log_route_stats

    # ------------------------------------------------------------------------------------------ #
    # entry point
    # ------------------------------------------------------------------------------------------ #
    def forward(
        self,
        outputs: MrDETROutput,
        targets: Targets,
        generator: torch.Generator | None = None,
        **inputs,
    ) -> dict[str, Tensor]:
        """Compute every unweighted loss term.

        Args:
            outputs: the model's training outputs; routes and encoder heads that are absent produce no
                terms.
            targets: B dicts with ``"labels"`` int64 [n_b] and ``"boxes"`` [n_b, 4] normalised cxcywh.
            generator: random generator of the one-to-many subsampling; None uses the global CPU
                generator (as the official code). Routes are visited in ``ROUTES`` order (PRIMARY,
                INSTRUCT, SEP_FFN) and layers in order, so the random draws happen in the official
                order.
            **inputs: what a subclass's :meth:`extra_losses` needs besides the outputs (InsSeg:
                ``pred_masks`` and ``target_masks``).

        Returns:
            ``{name: scalar float32 tensor}`` with the official names (``loss_class``, ``loss_bbox_0``,
            ``loss_giou_group_3``, ``loss_class_sep_5``, ``loss_bbox_enc_o2m``, ...).

        Raises:
            NonFiniteOutputError: a logits/boxes tensor holds NaN or inf (named by route and
                layer); checked before any matching.
        """
        for route in list(outputs.routes) + list(outputs.encoder):
            route_spec(route)
        check_finite_predictions(named_predictions(outputs))
        reference = self._any_prediction(outputs)
        targets = self.prepare_targets(targets, reference)
        num_boxes = self.num_boxes(targets, reference.device)

        losses: dict[str, Tensor] = {}
        final_matches: dict[Route, list[MatchIndices]] = {}
        for route in ROUTES:
            if route in outputs.routes:
                layers = outputs.routes[route].layers
                result = self.route_losses(route, layers, targets, num_boxes, generator)
                losses.update(result.terms)
                final_matches[route] = result.final_matches
        for route in ROUTES:
            if route in outputs.encoder:
                losses.update(
                    self.encoder_losses(route, outputs.encoder[route], targets, num_boxes)
                )
        if self.log_route_stats:
            self._put_route_stats(outputs, targets, final_matches)
        context = LossContext(targets, num_boxes, final_matches, generator)
        losses.update(self.extra_losses(outputs, context, **inputs))
        return losses

    @staticmethod
    def _put_route_stats(
        outputs: MrDETROutput,
        targets: list[dict[str, Tensor]],
        final_matches: dict[Route, list[MatchIndices]],
    ) -> None:
        """The one-to-many routes' final-layer positives as training scalars (outside a trainer's
        event storage: nothing)."""
        storage = current_event_storage()
        if storage is None:
            return
        num_gt = sum(int(t["labels"].numel()) for t in targets)
        for route, matches in final_matches.items():
            if not route_spec(route).one_to_many or not matches:
                continue
            num_queries = outputs.routes[route].layers[-1].logits.shape[1]
            distinct = sum(int(query.unique().numel()) for query, _ in matches)
            storage.put_scalar(
                f"o2m/{route.value}/positive_fraction", distinct / (num_queries * len(matches))
            )
            storage.put_scalar(
                f"o2m/{route.value}/matches_per_object",
                sum(int(query.numel()) for query, _ in matches) / max(num_gt, 1),
            )

    def extra_losses(
        self, outputs: MrDETROutput, context: LossContext, **inputs
    ) -> dict[str, Tensor]:
        """Terms a variant adds after the box terms (none here).

        Subclasses override this hook and call ``super().extra_losses`` with the inputs they do not
        consume, so that variants compose.

        Args:
            outputs: the training outputs.
            context: targets, ``num_boxes`` and final-layer matches of the box terms.
            **inputs: the extra inputs given to :meth:`forward`.

        Raises:
            TypeError: naming the inputs no class of the criterion consumed.
        """
        if inputs:
            raise TypeError(
                f"{type(self).__name__}: unexpected criterion inputs {sorted(inputs)} (no extra "
                "loss of this criterion uses them)"
            )
        return {}

    # ------------------------------------------------------------------------------------------ #
    # per route / head
    # ------------------------------------------------------------------------------------------ #
    def route_losses(
        self,
        route: Route,
        layers: list[Predictions],
        targets: Targets,
        num_boxes: float,
        generator: torch.Generator | None = None,
    ) -> RouteLosses:
        """Terms of every decoder layer of ``route`` (fresh matching per layer), and the final
        layer's matches."""
        one_to_many = route_spec(route).one_to_many
        normalizer = self.route_normalizer(route, num_boxes)
        losses: dict[str, Tensor] = {}
        indices: list[MatchIndices] = []
        for layer, pred in enumerate(layers):
            if one_to_many:
                indices = self.one_to_many_matcher(pred.logits, pred.boxes, targets, generator)
            else:
                indices = self.matcher(pred.logits, pred.boxes, targets)
            suffix = layer_suffix(route, layer, len(layers))
            losses.update(
                self.supervise(pred, targets, indices, normalizer, suffix, one_to_many=one_to_many)
            )
        return RouteLosses(losses, indices)

    def route_normalizer(self, route: Route, num_boxes: float) -> float:
        """The normaliser of ``route``'s terms: ``num_boxes``, times
        ``one_to_many_normalizer_scale`` on the one-to-many routes."""
        if route_spec(route).one_to_many:
            return num_boxes * self.one_to_many_normalizer_scale
        return num_boxes

    def encoder_losses(
        self,
        route: Route,
        pred: EncoderPredictions,
        targets: Targets,
        num_boxes: float,
    ) -> dict[str, Tensor]:
        """Class-agnostic terms of the encoder head that seeds ``route``."""
        agnostic = [{"labels": torch.zeros_like(t["labels"]), "boxes": t["boxes"]} for t in targets]
        if self.encoder_match_on_anchors:
            if pred.anchors is None:
                raise ValueError(
                    f"MrDETRCriterion: encoder_match_on_anchors=True but the {route.name} encoder "
                    "predictions have no anchors (EncoderPredictions.anchors is None)"
                )
            match_boxes = pred.anchors
        else:
            match_boxes = pred.boxes
        indices = self.encoder_matcher(pred.logits, match_boxes, agnostic)
        return self.supervise(pred, agnostic, indices, num_boxes, encoder_suffix(route))

    # ------------------------------------------------------------------------------------------ #
    # one prediction set
    # ------------------------------------------------------------------------------------------ #
    def supervise(
        self,
        pred: Predictions,
        targets: Targets,
        indices: list[MatchIndices],
        normalizer: float,
        suffix: str,
        *,
        one_to_many: bool = False,
    ) -> dict[str, Tensor]:
        """Class, L1 and GIoU terms of one prediction set for given matches.

        Args:
            pred: logits [B, Q, C] and boxes [B, Q, 4] (normalised cxcywh).
            targets: B dicts with ``"labels"`` [n_b] and ``"boxes"`` [n_b, 4] on the predictions' device.
            indices: B pairs ``(query_idx, gt_idx)``; a query may appear more than once.
            normalizer: divides every term.
            suffix: appended to ``loss_class`` / ``loss_bbox`` / ``loss_giou``.
            one_to_many: whether the matches are one-to-many (passed to :meth:`class_loss`).

        Returns:
            ``{f"loss_class{suffix}", f"loss_bbox{suffix}", f"loss_giou{suffix}"}`` scalars.
        """
        if pred.logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"MrDETRCriterion: logits{suffix or ' (final layer)'} have {pred.logits.shape[-1]} "
                f"classes, expected num_classes={self.num_classes}"
            )
        device = pred.boxes.device
        with torch.autocast(device_type=device.type, enabled=False):
            logits = pred.logits.float()
            boxes = pred.boxes.float()
            loss_class, pair_weights = self.class_loss(
                logits, boxes, targets, indices, normalizer, one_to_many=one_to_many
            )
            batch_idx, query_idx = self._query_index(indices)
            src_boxes = boxes[batch_idx, query_idx]
            target_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)])
            loss_bbox = l1_loss(src_boxes, target_boxes, normalizer)
            loss_giou = giou_loss(src_boxes, target_boxes, normalizer, pair_weights)
        return {
            f"loss_class{suffix}": loss_class,
            f"loss_bbox{suffix}": loss_bbox,
            f"loss_giou{suffix}": loss_giou,
        }

    def class_loss(
        self,
        logits: Tensor,
        boxes: Tensor,
        targets: Targets,
        indices: list[MatchIndices],
        normalizer: float,
        *,
        one_to_many: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Sigmoid focal loss against one-hot targets at the matched (query, class) entries.

        A query matched to several GTs gets a 1 at each of their classes.

        Args:
            logits: [B, Q, C] float32 logits.
            boxes: [B, Q, 4] float32 boxes (unused here; the Align variant needs them).
            targets: B target dicts.
            indices: B pairs ``(query_idx, gt_idx)``.
            normalizer: divides the loss.
            one_to_many: whether the matches are one-to-many (unused here).

        Returns:
            The scalar loss, and optional [M] per-pair weights for the GIoU loss (None here).
        """
        onehot = self.onehot_targets(logits, targets, indices)
        loss = sigmoid_focal_loss(
            logits, onehot, normalizer, alpha=self.focal_alpha, gamma=self.focal_gamma
        )
        return loss, None

    @staticmethod
    def onehot_targets(logits: Tensor, targets: Targets, indices: list[MatchIndices]) -> Tensor:
        """[B, Q, C] zeros with a 1 at (image, matched query, class of its GT) for every pair."""
        onehot = torch.zeros_like(logits)
        batch_idx, query_idx = MrDETRCriterion._query_index(indices)
        classes = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        onehot[batch_idx, query_idx, classes] = 1
        return onehot

    @staticmethod
    def _query_index(indices: list[MatchIndices]) -> tuple[Tensor, Tensor]:
        """(image index, query index) int64 [M] of every matched pair, images in order."""
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        query_idx = torch.cat([src for src, _ in indices])
        return batch_idx, query_idx

    # ------------------------------------------------------------------------------------------ #
    # targets and normaliser
    # ------------------------------------------------------------------------------------------ #
    def prepare_targets(self, targets: Targets, reference: Tensor) -> list[dict[str, Tensor]]:
        """Check the targets and move them to the device of ``reference`` [B, Q, 4] (boxes float32)."""
        check_targets(targets, reference, "MrDETRCriterion")
        device = reference.device
        prepared = [
            {
                "labels": t["labels"].to(device=device, dtype=torch.int64),
                "boxes": t["boxes"].to(device=device, dtype=torch.float32),
            }
            for t in targets
        ]
        labels = torch.cat([t["labels"] for t in prepared])
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"MrDETRCriterion: target labels must lie in [0, {self.num_classes}), got "
                f"min {int(labels.min())}, max {int(labels.max())}"
            )
        return prepared

    @staticmethod
    def num_boxes(targets: Targets, device: torch.device) -> float:
        """Number of GT boxes in the batch, averaged over processes, clamped to >= 1."""
        total = torch.as_tensor(
            [float(sum(len(t["labels"]) for t in targets))], dtype=torch.float32, device=device
        )
        world_size = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            world_size = dist.get_world_size()
        return torch.clamp(total / world_size, min=1).item()

    @staticmethod
    def _any_prediction(outputs: MrDETROutput) -> Tensor:
        """The boxes [B, Q, 4] of some prediction set (to read B and the device)."""
        for route_output in outputs.routes.values():
            if route_output.layers:
                return route_output.layers[0].boxes
        for pred in outputs.encoder.values():
            return pred.boxes
        raise ValueError(
            "MrDETRCriterion: outputs hold no predictions (no route and no encoder head)"
        )
