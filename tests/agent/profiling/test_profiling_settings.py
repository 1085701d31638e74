"""Profiling settings: off by default, a token when on, limits that agree."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.profiling.settings import ProfilingSettings


def test_defaults_are_off_and_documented_values() -> None:
    s = ProfilingSettings()
    assert s.enabled is False and s.allow_any_pid is False
    assert (s.default_seconds, s.max_seconds, s.default_rate_hz) == (10, 300, 100)
    assert (s.trigger.starved_host_seconds, s.trigger.seconds, s.trigger.cooldown_seconds) == (60, 20, 1800)
    assert s.trigger.enabled is True


def test_enabled_needs_a_token() -> None:
    with pytest.raises(ValidationError, match=r"profiling\.token: required when profiling\.enabled is true"):
        ProfilingSettings(enabled=True)
    assert ProfilingSettings(enabled=True, token_file="/run/secrets/token").token_file == "/run/secrets/token"


def test_token_is_secret_in_reprs() -> None:
    s = ProfilingSettings(enabled=True, token="hunter2")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"default_seconds": 400}, "profiling.default_seconds"),
        ({"default_rate_hz": 2000}, "profiling.default_rate_hz"),
        ({"trigger": {"seconds": 200}, "max_seconds": 100}, "profiling.trigger.seconds"),
        ({"token": "  "}, "profiling.token"),
    ],
)
def test_inconsistent_values_name_the_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        ProfilingSettings(**values)


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="max_duration"):
        ProfilingSettings(max_duration=5)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="cooldown"):
        ProfilingSettings(trigger={"cooldown": 5})  # type: ignore[arg-type]
