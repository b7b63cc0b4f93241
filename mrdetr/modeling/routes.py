"""Decoder routes of Mr. DETR and the one table of what each route means.

A route is passed explicitly to every decoder layer; the layer asks it which self-attention variant
and which FFN weights to use. Everything else about a route -- which proposal head seeds it, how it is
matched, how its loss terms are named -- is one :class:`RouteSpec` entry in :data:`ROUTES`, read by the
meta-architecture (``meta_arch/mr_detr.py``), the loss naming (``criterion/naming.py``), the mask losses
(``criterion/masks.py``) and the weight-dict builders (``criterion/weights.py``). Adding a route is one
enum value, one entry here and its case in the decoder layer.

Paper names vs official code names:

| Route       | paper (CVPR'25)                       | official flag / loss suffix  |
| ----------- | ------------------------------------- | ---------------------------- |
| ``PRIMARY`` | Route-2, one-to-one (kept at eval)    | none / ``""``, ``_0.._4``    |
| ``INSTRUCT``| Route-3, instructive self-attention   | ``o2m`` / ``_group_{i}``     |
| ``SEP_FFN`` | Route-1, independent one-to-many FFN  | ``sep`` / ``_sep_{i}``       |
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ROUTES", "Route", "RouteSpec", "route_spec"]


class Route(enum.Enum):
    """One pass of the shared decoder."""

    PRIMARY = "primary"
    INSTRUCT = "instruct"
    SEP_FFN = "sep_ffn"

    @property
    def is_one_to_many(self) -> bool:
        """Whether this route is supervised with one-to-many matching."""
        return route_spec(self).one_to_many

    @property
    def owns_proposal_head(self) -> bool:
        """Whether this route has its own two-stage proposal head (and encoder loss terms)."""
        return route_spec(self).proposal_head is self


@dataclass(frozen=True)
class RouteSpec:
    """How one decoder route is seeded and supervised.

    Attributes:
        proposal_head: the route whose two-stage proposal head gives this route its initial boxes
            (the head is ``TwoStageProposals.heads[proposal_head.value]``); a route that names itself
            owns a head, whose dense predictions get the ``encoder_suffix`` terms.
        instruction_tokens: the decoder self-attention prepends the instruction tokens (and the
            denoising attention mask gets their columns).
        one_to_many: matched with the one-to-many assigner (and normalised by
            ``num_boxes * one_to_many_normalizer_scale``) instead of the Hungarian matcher.
        suffix: appended to the loss names of every decoder layer (``""``, ``"_group"``, ``"_sep"``).
        index_final_layer: whether the final layer's names carry its index (``_group_5``) or not
            (the primary route's ``loss_class``).
        tag: the official code's short name of the route (``""``, ``"_o2m"``, ``"_sep"``), which
            names its proposal-head, denoising and mask terms.
    """

    proposal_head: Route
    instruction_tokens: bool
    one_to_many: bool
    suffix: str
    index_final_layer: bool
    tag: str

    @property
    def encoder_suffix(self) -> str:
        """Suffix of the terms of the proposal head this route owns (``_enc``, ``_enc_o2m``)."""
        return f"_enc{self.tag}"

    @property
    def dn_suffix(self) -> str:
        """Suffix of the denoising-query terms (``_dn``, ``_dn_o2m``, ``_dn_sep``)."""
        return f"_dn{self.tag}"

    @property
    def mask_suffix(self) -> str:
        """Suffix of the final layer's mask terms (``loss_mask``, ``loss_mask_o2m``, ...)."""
        return self.tag


# Routes in supervision order: the one-to-many assigner draws random numbers in this order.
# fmt: off
ROUTES: dict[Route, RouteSpec] = {
    #               RouteSpec(proposal_head, instruction_tokens, one_to_many, suffix,
    #                         index_final_layer, tag)
    Route.PRIMARY:  RouteSpec(Route.PRIMARY,  False, False, "",       False, ""),
    Route.INSTRUCT: RouteSpec(Route.INSTRUCT, True,  True,  "_group", True,  "_o2m"),
    Route.SEP_FFN:  RouteSpec(Route.PRIMARY,  False, True,  "_sep",   True,  "_sep"),
}
# fmt: on


def route_spec(route: Route) -> RouteSpec:
    """The table entry of ``route``; one clear error for a route without one."""
    try:
        return ROUTES[route]
    except KeyError:
        known = ", ".join(r.name for r in ROUTES)
        raise KeyError(
            f"modeling/routes.py: route {route!r} has no entry in ROUTES (known: {known})"
        ) from None
