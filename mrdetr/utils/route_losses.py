"""Which Mr. DETR route a loss term belongs to, and the per-route sums of a set of loss terms.

Loss keys: the primary route (one-to-one) has ``loss_*`` and ``loss_*_<layer>`` (and the encoder's
``loss_*_enc``), the instructive one-to-many route ``loss_*_group_<layer>`` / ``loss_*_o2m``, the
separate-FFN one-to-many route ``loss_*_sep_<layer>``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping

__all__ = ["LOSS_PREFIX", "PRIMARY_ROUTE", "ROUTE_PATTERNS", "route_of", "route_totals"]

LOSS_PREFIX = "loss_"
PRIMARY_ROUTE = "primary"
# route -> pattern of its loss keys; a loss key matching none of them belongs to PRIMARY_ROUTE
ROUTE_PATTERNS: dict[str, re.Pattern] = {
    "instruct": re.compile(r"_group|_o2m"),
    "sep_ffn": re.compile(r"_sep"),
}


def route_of(key: str) -> str:
    """The route of loss key ``key``."""
    return next((r for r, p in ROUTE_PATTERNS.items() if p.search(key)), PRIMARY_ROUTE)


def route_totals(row: Mapping[str, object]) -> dict[str, float]:
    """Sum of the numeric ``loss_*`` values of each route in ``row`` (routes without one are absent)."""
    totals: dict[str, float] = defaultdict(float)
    for key, value in row.items():
        if key.startswith(LOSS_PREFIX) and isinstance(value, (int, float)):
            totals[route_of(key)] += float(value)
    return dict(totals)
