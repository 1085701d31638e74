"""``gpulse start``: serve this node's GPUs, or the simulated fleet where there is no NVIDIA driver.

It is the one command a new user runs: on a GPU node it is ``gpulse serve``; on a laptop
or CI machine without a driver, it says so and runs ``gpulse demo`` so there is something
to see. The agent itself never branches on "simulated": only this launcher chooses.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def register(subparsers: Any) -> None:
    from agent.cli_serve import add_settings_options

    parser = subparsers.add_parser(
        "start",
        help="serve this node's GPUs; without an NVIDIA driver, run the simulated fleet",
        description="Run 'gpulse serve' when an NVIDIA driver answers, else 'gpulse demo' (the simulated "
        "fleet), with the same settings options.",
    )
    add_settings_options(parser)
    parser.set_defaults(func=run)


def driver_present() -> bool:
    from agent.nvml.backend import NvmlBackend

    probe = NvmlBackend()
    # The probe's own "host-only" warning would mislead here: this command falls back to the demo.
    logging.disable(logging.WARNING)
    try:
        return probe.start()
    finally:
        probe.close()
        logging.disable(logging.NOTSET)


def demo_argv(args: argparse.Namespace) -> list[str]:
    argv = ["demo"]
    for option in ("config", "listen", "interval", "log_level"):
        value = getattr(args, option, None)
        if value is not None:
            argv += [f"--{option.replace('_', '-')}", str(value)]
    return argv


def run(args: argparse.Namespace) -> int:
    if driver_present():
        from agent.cli_serve import run as serve

        return serve(args)
    print(
        "gpulse: no NVIDIA driver on this machine: running the simulated fleet ('gpulse demo') instead",
        file=sys.stderr,
    )
    from agent.cli import build_parser

    demo_args = build_parser().parse_args(demo_argv(args))
    return int(demo_args.func(demo_args) or 0)
