"""Matchers: one-to-one Hungarian matching and the one-to-many assigner of the auxiliary routes."""

from .hungarian import HungarianMatcher
from .one_to_many import OneToManyAssigner
from .utils import MatchIndices, NonFiniteOutputError, Targets

__all__ = [
    "HungarianMatcher",
    "MatchIndices",
    "NonFiniteOutputError",
    "OneToManyAssigner",
    "Targets",
]
