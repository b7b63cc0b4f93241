"""Loss weights: the table of every term the criterion produces, and its application.

The official configs build the weight dict with ad-hoc loops that also create keys the model never
produces (``_enc_sep``) and would let an unweighted term through. Here the dict is derived from the route
table (``modeling/routes.py``) through the same naming functions as the criterion (:mod:`.naming`), so it
holds exactly the produced keys, and :func:`apply_weights` refuses a term without a weight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor

from mrdetr.modeling.routes import ROUTES, Route, route_spec

from .naming import dn_layer_suffix, encoder_suffix, layer_suffix

__all__ = ["DEFAULT_BASE_WEIGHTS", "DEFAULT_ENCODER_WEIGHTS", "apply_weights", "build_weight_dict"]

# Deformable variant (configs: weight_dict / weight_dict_enc).
DEFAULT_BASE_WEIGHTS = {"loss_class": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}
DEFAULT_ENCODER_WEIGHTS = {"loss_class": 6.0, "loss_bbox": 15.0, "loss_giou": 6.0}


def build_weight_dict(
    *,
    base: Mapping[str, float] | None = None,
    num_decoder_layers: int = 6,
    encoder: Mapping[str, float] | None = None,
    one_to_many: Mapping[str, float] | None = None,
    routes: Iterable[Route] | None = None,
    encoder_routes: Iterable[Route] | None = None,
    denoising: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Weights of every loss term the criterion produces for the given routes and heads.

    Args:
        base: weights of the unsuffixed terms, used for every layer of the one-to-one routes
            (default ``{"loss_class": 2, "loss_bbox": 5, "loss_giou": 2}``).
        num_decoder_layers: D, the number of supervised decoder layers per route.
        encoder: weights of the encoder-head terms (default 6 / 15 / 6).
        one_to_many: weights of the one-to-many routes' terms (default: ``base``).
        routes: decoder routes that produce terms (None: every route of ``ROUTES``).
        encoder_routes: routes whose proposal head produces terms (None: every route of ``ROUTES``
            that owns one, PRIMARY and INSTRUCT).
        denoising: weights of the denoising terms of every decoder route and layer (DINO/Align:
            ``loss_class_dn``, ``loss_bbox_dn_0``, ``loss_giou_dn_o2m_3``, ...); None = no DN terms.

    Returns:
        ``{loss name: weight}``; for the defaults the 60 Deformable terms (114 with ``denoising``).
    """
    base = dict(DEFAULT_BASE_WEIGHTS if base is None else base)
    encoder = dict(DEFAULT_ENCODER_WEIGHTS if encoder is None else encoder)
    one_to_many = base if one_to_many is None else dict(one_to_many)
    routes = tuple(ROUTES if routes is None else routes)
    if encoder_routes is None:
        encoder_routes = [r for r in ROUTES if r.owns_proposal_head]
    if num_decoder_layers < 1:
        raise ValueError(
            f"build_weight_dict: num_decoder_layers must be >= 1, got {num_decoder_layers}"
        )

    # (weights, suffix function) of every per-layer family of terms a decoder route produces
    families = [(None, layer_suffix)]
    if denoising is not None:
        families.append((dict(denoising), dn_layer_suffix))
    weight_dict: dict[str, float] = {}
    for family_weights, suffix_of in families:
        for route in routes:
            weights = family_weights
            if weights is None:
                weights = one_to_many if route_spec(route).one_to_many else base
            for layer in range(num_decoder_layers):
                suffix = suffix_of(route, layer, num_decoder_layers)
                weight_dict.update({f"{name}{suffix}": float(w) for name, w in weights.items()})
    for route in encoder_routes:
        suffix = encoder_suffix(route)
        weight_dict.update({f"{name}{suffix}": float(w) for name, w in encoder.items()})
    return weight_dict


def apply_weights(
    losses: Mapping[str, Tensor], weight_dict: Mapping[str, float]
) -> dict[str, Tensor]:
    """Multiply every loss term by its weight.

    Args:
        losses: unweighted terms from the criterion.
        weight_dict: ``{name: weight}`` (e.g. from :func:`build_weight_dict`); extra names are allowed.

    Returns:
        ``{name: weighted term}`` with the keys of ``losses``.

    Raises:
        KeyError: naming every term of ``losses`` that has no weight (a term is never passed on
            unweighted).
    """
    missing = [name for name in losses if name not in weight_dict]
    if missing:
        raise KeyError(
            f"apply_weights: no weight for loss term(s) {missing}; add them to the weight dict "
            "(see mrdetr.modeling.criterion.weights.build_weight_dict)"
        )
    return {name: value * weight_dict[name] for name, value in losses.items()}
