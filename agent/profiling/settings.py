"""Profiling settings: off unless enabled, token-protected, limited to GPU processes.

Config keys are ``profiling.<field>`` (YAML) or ``GPULSE_PROFILING__<FIELD>`` (environment);
the starvation trigger lives under ``profiling.trigger``. Every default is documented in
docs/profiling.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

ProfileFormat = Literal["speedscope", "flamegraph", "raw"]


class TriggerSettings(BaseModel):
    """Profile a GPU's owning process tree when the GPU stays starved by host CPU."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True  # only acts when profiling itself is enabled
    # Clock seconds a GPU must stay predominantly starved_host, without a break, before it fires.
    starved_host_seconds: float = Field(default=60.0, gt=0)
    # "Predominantly": starved_host holds at least this share of each interval.
    min_share: float = Field(default=0.5, gt=0, le=1)
    seconds: int = Field(default=20, ge=1, le=300)  # capture length (real seconds: py-spy samples wall time)
    rate_hz: int = Field(default=100, ge=1, le=1000)
    cooldown_seconds: float = Field(
        default=1800.0, ge=0
    )  # at most one triggered capture per GPU per cooldown
    format: ProfileFormat = "speedscope"


class ProfilingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    token: SecretStr | None = None  # bearer token every profiling endpoint requires
    token_file: str | None = None  # or read it from this file (re-read on each request, so it can rotate)
    # Off: only processes that use a GPU and their descendants may be profiled.
    allow_any_pid: bool = False
    # Where profiles are kept (created 0700). Unset: "gpulse-profiles" under the system temp directory.
    directory: str | None = None
    pyspy_path: str = "py-spy"  # a name looked up on PATH, or a full path

    default_seconds: int = Field(default=10, ge=1)
    max_seconds: int = Field(default=300, ge=1, le=3600)
    default_rate_hz: int = Field(default=100, ge=1)
    max_rate_hz: int = Field(default=1000, ge=1, le=10000)
    max_concurrent: int = Field(default=2, ge=1, le=64)  # captures queued or running at once
    max_profiles: int = Field(default=50, ge=1)  # stored profiles; the oldest are evicted
    max_bytes: int = Field(default=256 * 1024**2, ge=1024)  # bytes of stored profiles; the oldest are evicted
    dump_timeout_seconds: float = Field(default=10.0, gt=0)  # one py-spy dump (instant stacks)

    trigger: TriggerSettings = TriggerSettings()

    @model_validator(mode="after")
    def _consistent(self) -> ProfilingSettings:
        if self.enabled and self.token is None and not self.token_file:
            raise ValueError(
                "profiling.token: required when profiling.enabled is true (or set profiling.token_file)"
            )
        if self.token is not None and not self.token.get_secret_value().strip():
            raise ValueError("profiling.token: must not be empty")
        if self.default_seconds > self.max_seconds:
            raise ValueError(
                f"profiling.default_seconds: {self.default_seconds} exceeds profiling.max_seconds "
                f"({self.max_seconds})"
            )
        if self.default_rate_hz > self.max_rate_hz:
            raise ValueError(
                f"profiling.default_rate_hz: {self.default_rate_hz} exceeds profiling.max_rate_hz "
                f"({self.max_rate_hz})"
            )
        if self.trigger.seconds > self.max_seconds:
            raise ValueError(
                f"profiling.trigger.seconds: {self.trigger.seconds} exceeds profiling.max_seconds "
                f"({self.max_seconds})"
            )
        return self
