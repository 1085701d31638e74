"""Profiling settings: off unless enabled, token-protected, limited to GPU processes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ProfilingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
