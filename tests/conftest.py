"""Shared pytest fixtures."""

from __future__ import annotations

import logging

import pytest


_MRDETR_LOGGER = logging.getLogger("mrdetr")
# the logger as the test session found it, before any test ran ``setup_logger``
_PRISTINE = (list(_MRDETR_LOGGER.handlers), _MRDETR_LOGGER.propagate, _MRDETR_LOGGER.level)


@pytest.fixture(autouse=True)
def _isolated_mrdetr_logger():
    """Undo what ``setup_logger`` (run by engine tests) does to the ``mrdetr`` logger — handlers and
    ``propagate=False`` — so later tests' ``caplog`` sees records again. The state restored is the
    one from before the session, not from before this test: a module-scoped fixture that trains
    (and so runs ``setup_logger``) is set up before this fixture records anything."""
    yield
    handlers, propagate, level = _PRISTINE
    for handler in _MRDETR_LOGGER.handlers[:]:
        if handler not in handlers:
            _MRDETR_LOGGER.removeHandler(handler)
            handler.close()
    _MRDETR_LOGGER.propagate, _MRDETR_LOGGER.level = propagate, level
