from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubelet_server import FakeKubelet  # beside this file; pytest puts this directory on sys.path


@pytest.fixture
def kubelet() -> Iterator[FakeKubelet]:
    # unix socket paths are limited to ~107 bytes: keep it short
    directory = tempfile.mkdtemp(prefix="kpr", dir="/tmp")
    server = FakeKubelet(str(Path(directory) / "kubelet.sock")).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
