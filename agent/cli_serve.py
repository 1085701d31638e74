"""``gpulse serve``: the daemon on this node's real GPUs (NVML) and host.

``add_settings_options``, ``settings_from_args``, ``configure_logging`` and ``serve``
are shared with other commands that run the same daemon on other backends
(``gpulse demo`` runs it on the simulated fleet).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agent.backends import GpuBackend, HostSource
from agent.clock import Clock, MonotonicClock
from agent.config import ENV_CONFIG_FILE, Settings, load_settings

if TYPE_CHECKING:
    from agent.runtime import Runtime


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the agent on this node (NVML + host)",
        description="Sample this node's GPUs and host, serve /metrics and the API. "
        "Without an NVIDIA driver it runs host-only and says so in /readyz.",
    )
    add_settings_options(parser)
    parser.set_defaults(func=run)


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help=f"YAML settings file (default: ${ENV_CONFIG_FILE})")
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to serve on (default 0.0.0.0:10835)")
    parser.add_argument(
        "--interval",
        metavar="SECONDS",
        type=float,
        dest="interval_seconds",
        help="sampling interval (0.1..60)",
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info")


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """File (--config or $GPULSE_CONFIG) < GPULSE_* environment < flags. Raises ConfigError."""
    env = os.environ if environ is None else environ
    config_file = getattr(args, "config", None) or env.get(ENV_CONFIG_FILE)
    flags = {
        "listen": getattr(args, "listen", None),
        "interval_seconds": getattr(args, "interval_seconds", None),
        "log_level": getattr(args, "log_level", None),
    }
    return load_settings(config_file, env, flags)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def serve(settings: Settings, gpu: GpuBackend, host: HostSource, clock: Clock) -> int:
    """Run the daemon on the given backends until SIGTERM/SIGINT; returns the exit status."""
    from agent.runtime import run_agent

    return run_agent(node_runtime(settings, gpu, host, clock), settings.listen)


def node_runtime(settings: Settings, gpu: GpuBackend, host: HostSource, clock: Clock) -> Runtime:
    """The runtime for a real node: owners from this node's /proc, cgroups and kubelet.

    (The demo builds its own: its simulated PIDs may be unrelated processes of this machine.)
    """
    from agent.attribution.attributor import Attributor
    from agent.runtime import Runtime

    runtime = Runtime(settings, gpu, host, clock)
    attributor = Attributor(settings.attribution, procfs=settings.procfs, clock=clock)
    runtime.owners_provider = attributor.provide
    runtime.add_part(attributor)  # its kubelet refresh thread starts and stops with the runtime
    return runtime


def real_backends(settings: Settings, clock: Clock) -> tuple[GpuBackend, HostSource]:
    """The real NVML and host backends (imported here: only this path loads pynvml)."""
    from agent.host.backend import HostBackend
    from agent.nvml.backend import NvmlBackend

    gpu: GpuBackend = NvmlBackend(clock=clock, health_refresh_s=settings.health_interval_seconds)
    host: HostSource = HostBackend(
        procfs=settings.procfs, sysfs=settings.sysfs, cgroupfs=settings.cgroupfs, clock=clock
    )
    return gpu, host


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    configure_logging(settings.log_level)
    clock = MonotonicClock()
    gpu, host = real_backends(settings, clock)
    return serve(settings, gpu, host, clock)
