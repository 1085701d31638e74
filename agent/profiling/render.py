"""Turn collapsed stacks into the formats people open: speedscope JSON and a flame graph SVG.

py-spy writes one format per run, and a process can only be ptrace-attached by one
sampler at a time, so every capture is recorded once as collapsed stacks (which the
summary needs anyway) and the other formats are rendered from them here.

- speedscope: one "sampled" profile per process and thread, the way py-spy lays out its own
  speedscope output; each distinct stack is one sample weighted by its count / rate (seconds).
  Aggregated stacks lose the time order (py-spy's own speedscope keeps it); the left-heavy and
  sandwich views, which are what one reads a profile with, are unaffected.
- flame graph: the classic layout (root at the bottom, width proportional to samples, siblings
  in name order), as static SVG with a tooltip per frame and no script.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from agent.profiling.stacks import Frame, Stack

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"

CONTENT_TYPES = {
    "speedscope": "application/json",
    "flamegraph": "image/svg+xml",
    "raw": "text/plain; charset=utf-8",
}
EXTENSIONS = {"speedscope": "speedscope.json", "flamegraph": "svg", "raw": "txt"}


def to_raw(stacks: Sequence[Stack]) -> str:
    return "".join(f"{stack.key()} {stack.count}\n" for stack in stacks)


def to_speedscope(stacks: Sequence[Stack], *, rate_hz: int, name: str) -> str:
    frame_index: dict[Frame, int] = {}
    frames: list[dict[str, object]] = []
    profiles: dict[tuple[int | None, int | None], dict[str, object]] = {}
    weight_unit = 1.0 / rate_hz

    for stack in stacks:
        process = stack.process
        pid = process.pid if process is not None else None
        profile = profiles.get((pid, stack.tid))
        if profile is None:
            title = " ".join(
                part
                for part in (
                    f"Process {pid}" if pid is not None else "",
                    f"Thread {stack.tid}" if stack.tid is not None else "",
                    json.dumps(stack.thread_name) if stack.thread_name else "",
                )
                if part
            )
            profile = {
                "type": "sampled",
                "name": title or name,
                "unit": "seconds",
                "startValue": 0.0,
                "endValue": 0.0,
                "samples": [],
                "weights": [],
            }
            profiles[(pid, stack.tid)] = profile
        indices = []
        for frame in stack.frames:
            index = frame_index.get(frame)
            if index is None:
                index = len(frames)
                frame_index[frame] = index
                entry: dict[str, object] = {"name": frame.function}
                if frame.file:
                    entry["file"] = frame.file
                if frame.line:
                    entry["line"] = frame.line
                frames.append(entry)
            indices.append(index)
        weight = stack.count * weight_unit
        profile["samples"].append(indices)  # type: ignore[attr-defined]
        profile["weights"].append(weight)  # type: ignore[attr-defined]
        profile["endValue"] = round(float(profile["endValue"]) + weight, 6)  # type: ignore[arg-type]

    # Busiest thread first: speedscope opens the profile at activeProfileIndex.
    ordered = sorted(profiles.values(), key=lambda p: -float(p["endValue"]))  # type: ignore[arg-type]
    document = {
        "$schema": SPEEDSCOPE_SCHEMA,
        "shared": {"frames": frames},
        "profiles": ordered,
        "name": name,
        "activeProfileIndex": 0,
        "exporter": "gpulse",
    }
    return json.dumps(document, separators=(",", ":"))


class _Node:
    __slots__ = ("children", "count", "label")

    def __init__(self, label: str) -> None:
        self.label = label
        self.count = 0
        self.children: dict[str, _Node] = {}


def _tree(stacks: Sequence[Stack]) -> _Node:
    root = _Node("all")
    for stack in stacks:
        root.count += stack.count
        node = root
        labels = [f"process {p.pid}: {p.cmdline}" for p in stack.processes]
        if stack.tid is not None:
            labels.append(f"thread {stack.tid}: {stack.thread_name}".rstrip(": "))
        labels.extend(frame.label() for frame in stack.frames)
        for label in labels:
            child = node.children.get(label)
            if child is None:
                child = node.children[label] = _Node(label)
            child.count += stack.count
            node = child
    return root


def _depth(node: _Node) -> int:
    return 1 + max((_depth(child) for child in node.children.values()), default=0)


def _colour(label: str) -> str:
    # Warm flame palette, stable per label so the same function keeps its colour across profiles.
    digest = hashlib.blake2s(label.encode("utf-8", "replace"), digest_size=3).digest()
    red = 205 + digest[0] % 50
    green = digest[1] % 230
    blue = digest[2] % 55
    return f"rgb({red},{green},{blue})"


def to_flamegraph(
    stacks: Sequence[Stack],
    *,
    title: str,
    width: int = 1200,
    frame_height: int = 16,
    min_width_px: float = 0.1,
) -> str:
    root = _tree(stacks)
    depth = _depth(root)
    pad_x, pad_top, pad_bottom = 10, 34, 10
    height = pad_top + depth * frame_height + pad_bottom
    total = max(root.count, 1)
    scale = (width - 2 * pad_x) / total
    char_px = 7.0  # 12 px monospace-ish average glyph width

    parts = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n',
        f'<svg version="1.1" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Verdana, sans-serif" font-size="12">\n',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f8f8f8"/>\n',
        f'<text x="{width / 2:.0f}" y="20" text-anchor="middle" font-size="16">{escape(title)}</text>\n',
    ]

    # Iterative walk: deep Python stacks must not hit the recursion limit here.
    pending: list[tuple[_Node, float, int]] = [(root, float(pad_x), 0)]
    while pending:
        node, x, level = pending.pop()
        w = node.count * scale
        if w < min_width_px:
            continue
        y = height - pad_bottom - (level + 1) * frame_height
        share = node.count / total * 100
        tooltip = f"{node.label} ({node.count} samples, {share:.2f} %)"
        parts.append(
            f"<g><title>{escape(tooltip)}</title>"
            f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{frame_height - 1}" '
            f'fill={quoteattr(_colour(node.label))} rx="2"/>'
        )
        max_chars = int((w - 6) / char_px)
        if max_chars >= 3:
            text = node.label if len(node.label) <= max_chars else node.label[: max_chars - 2] + ".."
            parts.append(f'<text x="{x + 3:.2f}" y="{y + frame_height - 4}">{escape(text)}</text>')
        parts.append("</g>\n")
        child_x = x
        for label in sorted(node.children):
            child = node.children[label]
            pending.append((child, child_x, level + 1))
            child_x += child.count * scale
    parts.append("</svg>\n")
    return "".join(parts)


def render(fmt: str, stacks: Sequence[Stack], *, rate_hz: int, title: str) -> str:
    if fmt == "speedscope":
        return to_speedscope(stacks, rate_hz=rate_hz, name=title)
    if fmt == "flamegraph":
        return to_flamegraph(stacks, title=title)
    if fmt == "raw":
        return to_raw(stacks)
    raise ValueError(f"unknown profile format {fmt!r}: use speedscope, flamegraph or raw")
