"""Speedscope and flame graph output rendered from collapsed stacks."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from agent.profiling.render import render, to_flamegraph, to_raw, to_speedscope
from agent.profiling.stacks import parse_text

TEXT = (
    'process 1:"python a.py";thread (1): MainThread;main (a.py:1);hot (a.py:5) 75\n'
    'process 1:"python a.py";thread (1): MainThread;main (a.py:1);cold (a.py:9) 25\n'
    'process 1:"python a.py";process 2:"python a.py";thread (2): MainThread;work (a.py:20) 50\n'
)
SVG = "{http://www.w3.org/2000/svg}"


def test_speedscope_document() -> None:
    doc = json.loads(to_speedscope(parse_text(TEXT), rate_hz=100, name="p"))
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = doc["shared"]["frames"]
    profiles = doc["profiles"]
    assert [p["name"] for p in profiles] == [
        'Process 1 Thread 1 "MainThread"',
        'Process 2 Thread 2 "MainThread"',
    ]
    main = profiles[0]
    assert main["type"] == "sampled" and main["unit"] == "seconds"
    assert main["endValue"] == pytest.approx(1.0)  # 100 samples at 100 Hz
    assert main["weights"] == pytest.approx([0.75, 0.25])
    # stacks run root first, leaf last, and index the shared frame table
    first = [frames[i] for i in main["samples"][0]]
    assert [f["name"] for f in first] == ["main", "hot"]
    assert first[1] == {"name": "hot", "file": "a.py", "line": 5}
    assert len(main["samples"]) == len(main["weights"])


def test_flamegraph_is_valid_svg_with_proportional_widths() -> None:
    svg = to_flamegraph(parse_text(TEXT), title="t <&>", width=1020)
    root = ET.fromstring(svg)
    groups = root.findall(f"{SVG}g")
    widths = {}
    for g in groups:
        title = g.find(f"{SVG}title")
        rect = g.find(f"{SVG}rect")
        assert title is not None and rect is not None
        widths[title.text.split(" (")[0]] = float(rect.get("width", 0))  # type: ignore[union-attr]
    usable = 1020 - 20
    assert widths["all"] == pytest.approx(usable)
    assert widths["hot"] == pytest.approx(usable * 75 / 150, abs=0.01)
    assert widths["work"] == pytest.approx(usable * 50 / 150, abs=0.01)
    # a child sits directly above its parent: y decreases by one frame height per level
    ys = {t: None for t in widths}
    for g in groups:
        ys[g.find(f"{SVG}title").text.split(" (")[0]] = float(g.find(f"{SVG}rect").get("y"))  # type: ignore[union-attr]
    assert ys["hot"] == ys["main"] - 16  # type: ignore[operator]
    assert "t &lt;&amp;&gt;" in svg


def test_flamegraph_drops_slivers() -> None:
    text = "thread (1): M;big (a.py:1) 100000\nthread (1): M;tiny (a.py:2) 1\n"
    svg = to_flamegraph(parse_text(text), title="x", width=1000)
    assert "tiny" not in svg
    assert "big" in svg


def test_raw_round_trip_and_unknown_format() -> None:
    assert to_raw(parse_text(TEXT)) == TEXT
    with pytest.raises(ValueError, match="unknown profile format"):
        render("pprof", parse_text(TEXT), rate_hz=100, title="x")
