"""Shared pytest fixtures."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _isolated_mrdetr_logger():
    """Undo what ``setup_logger`` (run by engine tests) does to the ``mrdetr`` logger — handlers and
    ``propagate=False`` — so later tests' ``caplog`` sees records again."""
    logger = logging.getLogger("mrdetr")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    for handler in logger.handlers[:]:
        if handler not in handlers:
            logger.removeHandler(handler)
            handler.close()
    logger.propagate, logger.level = propagate, level
