"""A variant is an import plus a small delta."""

from .base import model, optimizer, train  # noqa: F401 - re-exported config nodes

model.num_queries = 900
train.output_dir = "./output/v_900q"
