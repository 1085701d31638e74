"""Fixtures of the live page's tests (helpers in web_fixtures.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from web_fixtures import FilledNode


@pytest.fixture
def filled(scripted_gpu: Any, static_host: Any) -> Iterator[Any]:
    """``filled(gpus=2)`` -> a FilledNode; its runtime is stopped afterwards."""
    made: list[FilledNode] = []

    def make(gpus: int = 2) -> FilledNode:
        made.append(FilledNode(scripted_gpu, static_host, gpus))
        return made[-1]

    yield make
    for node in made:
        node.runtime.stop(timeout=0.2)
