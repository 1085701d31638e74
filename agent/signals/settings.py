"""Thresholds and rules of the derived signals; every one documented in the README."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SignalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    precision: str = "bf16"  # the training precision the estimated MFU is computed for
