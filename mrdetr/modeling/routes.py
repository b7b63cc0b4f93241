"""Decoder routes of Mr. DETR.

A route is passed explicitly to every decoder layer; the layer asks it which self-attention variant
and which FFN weights to use. Paper names vs official code names:

| Route       | paper (CVPR'25)                       | official flag / loss suffix  |
| ----------- | ------------------------------------- | ---------------------------- |
| ``PRIMARY`` | Route-2, one-to-one (kept at eval)    | none / ``""``, ``_0.._4``    |
| ``INSTRUCT``| Route-3, instructive self-attention   | ``o2m`` / ``_group_{i}``     |
| ``SEP_FFN`` | Route-1, independent one-to-many FFN  | ``sep`` / ``_sep_{i}``       |
"""

from __future__ import annotations

import enum


class Route(enum.Enum):
    """One pass of the shared decoder."""

    PRIMARY = "primary"
    INSTRUCT = "instruct"
    SEP_FFN = "sep_ffn"

    @property
    def is_one_to_many(self) -> bool:
        """Whether this route is supervised with one-to-many matching."""
        return self is not Route.PRIMARY
