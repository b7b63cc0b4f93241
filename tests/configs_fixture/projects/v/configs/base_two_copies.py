"""Two imports of the same node must be independent copies."""

from .base import model  # noqa: F401 - re-exported config node
from .base import model as other_model

other_model.num_queries = 1
other_model.transformer.decoder.num_layers = 1
