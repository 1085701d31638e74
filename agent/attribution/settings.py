"""Attribution settings: the kubelet pod-resources socket, refresh timer, series cap."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AttributionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True, description="attribute GPUs and processes to containers, pods and Slurm jobs"
    )
    kubernetes: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="ask the kubelet's pod-resources API: auto = when its socket exists "
        "(a missing socket is then no failure), on = always (a missing socket fails the collector)",
    )
    kubelet_socket: str = Field(
        default="/var/lib/kubelet/pod-resources/kubelet.sock", description="kubelet pod-resources unix socket"
    )
    kubelet_refresh_seconds: float = Field(default=10.0, gt=0, le=3600, description="how often to call List")
    kubelet_timeout_seconds: float = Field(default=2.0, gt=0, le=60, description="deadline of one List call")
    kubelet_keep_stale_seconds: float = Field(
        default=60.0,
        ge=0,
        le=86400,
        description="keep the last answer this long while the kubelet does not answer",
    )
    gpu_resource_prefixes: list[str] = Field(
        default_factory=lambda: ["nvidia.com/"],
        description="extended-resource names that are GPUs (nvidia.com/gpu, nvidia.com/mig-1g.10gb, ...)",
    )
    slurm_environ: bool = Field(
        default=True,
        description="read SLURM_* from /proc/<pid>/environ of GPU processes (for partition and user)",
    )
    max_series: int = Field(
        default=2000,
        ge=1,
        le=1_000_000,
        description="cap on attribution series (process and allocation info) per node",
    )
