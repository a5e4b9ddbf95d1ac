"""Fixtures shared by the test modules of this folder."""

import pytest
from monitor_support import InlineExecutor

from vms.monitor import Monitor


@pytest.fixture
def monitor():
    """A Monitor whose cycle() polls hosts inline (the threaded test uses a real one)."""
    m = Monitor(poll_seconds=60, stale_seconds=30)
    m.pool.shutdown()
    m.pool = InlineExecutor()
    yield m
    m.stop.set()
