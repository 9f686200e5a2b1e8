from __future__ import annotations

import logging

import pytest


@pytest.fixture
def logging_not_configured():
    """The root logger as in a fresh process (no handler, WARNING), whatever an earlier test configured (an in-process
    bundle run applies the bundle's logging.conf: INFO to stdout), restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    root.setLevel(logging.WARNING)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
