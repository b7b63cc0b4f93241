"""How each route is supervised and how its loss terms are named (official names, spec §2.5).

This is the one table that both the criterion and the weight-dict builder read:

| route      | matching    | decoder layer l of D               | encoder head |
| ---------- | ----------- | ---------------------------------- | ------------ |
| PRIMARY    | one-to-one  | ``""`` for l = D-1, else ``_{l}``  | ``_enc``     |
| INSTRUCT   | one-to-many | ``_group_{l}``                     | ``_enc_o2m`` |
| SEP_FFN    | one-to-many | ``_sep_{l}``                       | ``_enc_sep`` (never produced officially) |

Denoising queries (DINO/Align) of each route: ``_dn`` / ``_dn_o2m`` / ``_dn_sep`` for the final layer and
``{suffix}_{l}`` for the other layers (``_dn_0``, ``_dn_o2m_3``, ``_dn_sep_4``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mrdetr.modeling.routes import Route

__all__ = [
    "LOSS_TERMS",
    "ROUTE_LOSSES",
    "RouteLossSpec",
    "dn_layer_suffix",
    "encoder_suffix",
    "layer_suffix",
    "route_loss_spec",
]

# The terms every supervised prediction set produces, before the suffix.
LOSS_TERMS = ("loss_class", "loss_bbox", "loss_giou")


@dataclass(frozen=True)
class RouteLossSpec:
    """Supervision of one decoder route.

    Attributes:
        suffix: appended to the loss names of every layer (``""``, ``"_group"``, ``"_sep"``).
        one_to_many: matched with the one-to-many assigner (and normalised by
            ``num_boxes * one_to_many_normalizer_scale``) instead of the Hungarian matcher.
        index_final_layer: whether the final layer's names carry its index (``_group_5``) or not
            (the primary route's ``loss_class``).
        encoder_suffix: suffix of the encoder head that seeds this route.
        dn_suffix: suffix of the route's denoising-query terms (final layer unindexed).
    """

    suffix: str
    one_to_many: bool
    index_final_layer: bool
    encoder_suffix: str
    dn_suffix: str = ""


ROUTE_LOSSES: dict[Route, RouteLossSpec] = {
    Route.PRIMARY: RouteLossSpec(
        suffix="",
        one_to_many=False,
        index_final_layer=False,
        encoder_suffix="_enc",
        dn_suffix="_dn",
    ),
    Route.INSTRUCT: RouteLossSpec(
        suffix="_group",
        one_to_many=True,
        index_final_layer=True,
        encoder_suffix="_enc_o2m",
        dn_suffix="_dn_o2m",
    ),
    Route.SEP_FFN: RouteLossSpec(
        suffix="_sep",
        one_to_many=True,
        index_final_layer=True,
        encoder_suffix="_enc_sep",
        dn_suffix="_dn_sep",
    ),
}


def route_loss_spec(route: Route) -> RouteLossSpec:
    """The supervision entry of ``route``; a clear error for a route without one."""
    try:
        return ROUTE_LOSSES[route]
    except KeyError:
        known = ", ".join(r.name for r in ROUTE_LOSSES)
        raise KeyError(
            f"criterion/naming.py: route {route!r} has no loss entry in ROUTE_LOSSES (known: {known})"
        ) from None


def layer_suffix(route: Route, layer: int, num_layers: int) -> str:
    """Suffix of decoder layer ``layer`` (0-based) of ``num_layers`` on ``route``."""
    spec = route_loss_spec(route)
    if layer == num_layers - 1 and not spec.index_final_layer:
        return spec.suffix
    return f"{spec.suffix}_{layer}"


def encoder_suffix(route: Route) -> str:
    """Suffix of the loss terms of ``route``'s encoder head."""
    return route_loss_spec(route).encoder_suffix


def dn_layer_suffix(route: Route, layer: int, num_layers: int) -> str:
    """Suffix of the denoising terms of decoder layer ``layer`` (0-based) of ``num_layers`` on ``route``:
    the final layer is unindexed on every route (``_dn``, ``_dn_o2m``, ``_dn_sep``)."""
    spec = route_loss_spec(route)
    if layer == num_layers - 1:
        return spec.dn_suffix
    return f"{spec.dn_suffix}_{layer}"
