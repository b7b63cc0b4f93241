"""Fails while executing."""

model = dict(num_queries=300)
ratio = 1 / 0
