"""Fixtures for the simulator's tests."""

from __future__ import annotations

import pytest

from agent.sim.cli import FastForwardClock


@pytest.fixture
def auto_clock() -> FastForwardClock:
    """A clock that jumps when waited on: a recording loop runs instantly and exactly."""
    return FastForwardClock()
