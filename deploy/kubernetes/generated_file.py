"""What the manifest generators share: YAML with readable literal blocks, and write-or-check.

A generated manifest is committed; ``--check`` (run by the tests) fails when it no longer
matches its source, so the committed file can never drift from dashboards/.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


class LiteralDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions, dashboard JSON) as literal blocks, readable in review."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


LiteralDumper.add_representer(str, _str)


def dump(data: Any, *, documents: bool = False) -> str:
    options: dict[str, Any] = {
        "Dumper": LiteralDumper,
        "sort_keys": False,
        "width": 120,
        "allow_unicode": True,
    }
    return yaml.dump_all(data, **options) if documents else yaml.dump(data, **options)


def write_or_check(
    build: Callable[[], str], out: Path, script: Path, description: str, argv: list[str] | None = None
) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="only compare with the committed file")
    args = parser.parse_args(argv)
    text = build()
    if args.check:
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            sys.stderr.write(
                f"{out.relative_to(REPO)} is out of date: run python {script.relative_to(REPO)}\n"
            )
            return 1
        return 0
    out.write_text(text, encoding="utf-8")
    return 0
