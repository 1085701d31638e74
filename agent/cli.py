"""The ``gpulse`` command line: one subcommand per module, each exposing ``register(subparsers)``.

A subcommand's handler takes the parsed arguments and returns the exit status. A
configuration problem (``ConfigError``) is printed as one line naming the key, with
exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import agent
from agent.config import ConfigError

# Modules that add subcommands, in help order.
COMMAND_MODULES: list[str] = [
    "agent.cli_start",
    "agent.cli_serve",
    "agent.cli_status",
    "agent.sim.cli",
    "agent.profiling.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpulse",
        description="GPU/CPU telemetry agent: where every GPU-second goes, and why a GPU is not doing "
        "useful work.",
    )
    parser.add_argument("--version", action="version", version=f"gpulse {agent.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except ConfigError as exc:
        print(f"gpulse: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
