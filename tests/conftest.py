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


def pytest_collection_modifyitems(config, items):
    """Run the tests that load OpenVINO's runtime into the test process after every other test.

    With OpenVINO's CPU runtime loaded in-process, a later in-process demo run (OpenCV drawing and
    video I/O) of the same pytest process crashed with a segmentation fault after ~100 other tests;
    neither half of those tests alone reproduced it. Users run OpenVINO in a deployment process of
    its own; here the tests that need it in-process go last so no other test shares the state.
    """
    items.sort(key=lambda item: item.get_closest_marker("openvino") is not None)
