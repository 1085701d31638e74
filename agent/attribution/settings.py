"""Attribution settings: the kubelet pod-resources socket, refresh timer, series cap."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AttributionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kubelet_socket: str = "/var/lib/kubelet/pod-resources/kubelet.sock"
