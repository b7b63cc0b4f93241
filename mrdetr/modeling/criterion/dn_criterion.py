"""Criterion of Mr. DETR-DINO / -Align: the Mr. DETR terms plus denoising terms for every route.

The denoising (DN) queries of each route are supervised at fixed ``(query, gt)`` pairs (the positive
slots; :func:`mrdetr.modeling.denoising.dn_match_indices`), negatives and empty slots acting as
background in the class loss, normalised by ``num_boxes * G``. Names (D decoder layers):
``loss_*_dn`` / ``_dn_{0..D-2}`` (PRIMARY), ``_dn_o2m`` / ``_dn_o2m_{l}`` (INSTRUCT), ``_dn_sep`` /
``_dn_sep_{l}`` (SEP_FFN). Without DN queries (``dn_number <= 0`` or a batch without GT) the same terms
are returned as exact zeros, as the official criterion does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mrdetr.modeling.denoising import dn_match_indices
from mrdetr.modeling.matcher import Targets
from mrdetr.modeling.outputs import MrDETROutput
from mrdetr.modeling.routes import ROUTES

from .criterion import LossContext, MrDETRCriterion
from .naming import LOSS_TERMS, dn_layer_suffix

__all__ = ["DNCriterion"]


class DNCriterion(MrDETRCriterion):
    """:class:`MrDETRCriterion` plus the denoising terms of every decoder route.

    Takes the same arguments; the DINO/Align configs use the main matcher on the predicted boxes for
    the encoder heads (``encoder_match_on_anchors=False``), ``one_to_many_normalizer_scale=3`` and an
    assigner with ``iou_weight=0.8``.
    """

    def extra_losses(
        self, outputs: MrDETROutput, context: LossContext, **inputs
    ) -> dict[str, Tensor]:
        """The parent's extra terms plus the DN terms of every route in ``outputs.routes``, on the
        targets and ``num_boxes`` that :meth:`MrDETRCriterion.forward` prepared for the box terms."""
        losses = super().extra_losses(outputs, context, **inputs)
        losses.update(self.denoising_losses(outputs, context.targets, context.num_boxes))
        return losses

    def denoising_losses(
        self, outputs: MrDETROutput, targets: Targets, num_boxes: float
    ) -> dict[str, Tensor]:
        """DN terms of every route that ran (zeros when no DN query was built).

        Args:
            outputs: the training outputs.
            targets: prepared targets (on the predictions' device).
            num_boxes: the batch's GT count (averaged over processes, >= 1).
        """
        losses: dict[str, Tensor] = {}
        meta = outputs.dn_meta
        indices = dn_match_indices(meta, targets) if meta is not None else None
        for route in ROUTES:
            if route not in outputs.routes:
                continue
            num_layers = len(outputs.routes[route].layers)
            dn_layers = outputs.denoising.get(route)
            if meta is None or dn_layers is None:
                device = outputs.routes[route].layers[0].boxes.device
                zero = torch.zeros((), dtype=torch.float32, device=device)
                for layer in range(num_layers):
                    suffix = dn_layer_suffix(route, layer, num_layers)
                    losses.update({f"{name}{suffix}": zero.clone() for name in LOSS_TERMS})
                continue
            if len(dn_layers) != num_layers:
                raise ValueError(
                    f"DNCriterion: route {route.name} has {num_layers} decoder layers but "
                    f"{len(dn_layers)} denoising predictions"
                )
            normalizer = num_boxes * meta.num_groups
            for layer, pred in enumerate(dn_layers):
                suffix = dn_layer_suffix(route, layer, num_layers)
                losses.update(self.supervise(pred, targets, indices, normalizer, suffix))
        return losses
