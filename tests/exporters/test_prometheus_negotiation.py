"""Serving the rendered exposition: format and encoding by request headers, cached bodies, gzip."""

from __future__ import annotations

import gzip
import threading

import pytest

from agent.snapshot import Snapshot
from exporters import examples
from exporters.prometheus import (
    OPENMETRICS,
    OPENMETRICS_CONTENT_TYPE,
    TEXT,
    TEXT_CONTENT_TYPE,
    Renderer,
    render,
)

PROMETHEUS_2_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return examples.full_snapshot(2)


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, TEXT_CONTENT_TYPE),
        ("", TEXT_CONTENT_TYPE),
        (PROMETHEUS_2_ACCEPT, OPENMETRICS_CONTENT_TYPE),
        (PROMETHEUS_3_ACCEPT, OPENMETRICS_CONTENT_TYPE),
        ("text/plain;version=0.0.4", TEXT_CONTENT_TYPE),
        ("application/openmetrics-text; version=0.0.1", OPENMETRICS_CONTENT_TYPE),
        ("Application/OpenMetrics-Text", OPENMETRICS_CONTENT_TYPE),
        ("application/openmetrics-text;q=0.3, text/plain;q=0.5", TEXT_CONTENT_TYPE),
        ("application/openmetrics-text;q=0", TEXT_CONTENT_TYPE),
        ("application/openmetrics-text;q=oops", TEXT_CONTENT_TYPE),
        ("text/plain, application/openmetrics-text", OPENMETRICS_CONTENT_TYPE),
        ("*/*", TEXT_CONTENT_TYPE),
        ("application/json", TEXT_CONTENT_TYPE),
    ],
)
def test_format_by_accept_header(snapshot: Snapshot, accept: str | None, content_type: str) -> None:
    exposition = render(snapshot)
    body, headers = exposition.negotiate(accept, None)
    assert headers["Content-Type"] == content_type
    assert "Content-Encoding" not in headers
    fmt = OPENMETRICS if content_type == OPENMETRICS_CONTENT_TYPE else TEXT
    assert body == exposition.body(fmt)
    assert body.endswith(b"# EOF\n") == (fmt == OPENMETRICS)


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip;q=0", False),
        ("*", True),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("identity", False),
        ("deflate", False),
    ],
)
def test_gzip_by_accept_encoding(snapshot: Snapshot, accept_encoding: str | None, gzipped: bool) -> None:
    exposition = render(snapshot)
    body, headers = exposition.negotiate(PROMETHEUS_2_ACCEPT, accept_encoding)
    assert headers["Vary"] == "Accept, Accept-Encoding"
    assert (headers.get("Content-Encoding") == "gzip") == gzipped
    plain = exposition.body(OPENMETRICS)
    assert (gzip.decompress(body) if gzipped else body) == plain


@pytest.mark.parametrize("fmt", [TEXT, OPENMETRICS])
def test_gzip_round_trip_and_smaller(snapshot: Snapshot, fmt: str) -> None:
    exposition = render(snapshot)
    compressed = exposition.body(fmt, True)
    assert gzip.decompress(compressed) == exposition.body(fmt)
    assert len(compressed) * 5 < len(exposition.body(fmt))


def test_bodies_are_built_once_per_tick(snapshot: Snapshot) -> None:
    exposition = render(snapshot)
    results: list[bytes] = []

    def scrape() -> None:
        results.append(exposition.negotiate(PROMETHEUS_2_ACCEPT, "gzip")[0])

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and all(body is results[0] for body in results)
    assert exposition.requested == {(OPENMETRICS, True)}


def test_unknown_format_is_refused(snapshot: Snapshot) -> None:
    with pytest.raises(ValueError, match="unknown exposition format"):
        render(snapshot).body("json")


def test_renderer_prepares_what_scrapers_asked_for(snapshot: Snapshot) -> None:
    renderer = Renderer()
    first = renderer(snapshot)
    assert first.prepared == {(TEXT, False)}  # nothing asked for yet: only the text body is built
    first.negotiate(PROMETHEUS_2_ACCEPT, "gzip")
    second = renderer(snapshot)
    assert (OPENMETRICS, True) in second.prepared
    # Still prepared on the next tick, although nobody scraped the second exposition.
    assert (OPENMETRICS, True) in renderer(snapshot).prepared


def test_renderer_forgets_formats_nobody_asks_for(snapshot: Snapshot) -> None:
    renderer = Renderer(keep_seconds=-1.0)  # everything is already too old
    renderer(snapshot).negotiate(PROMETHEUS_2_ACCEPT, "gzip")
    assert renderer(snapshot).prepared == {(TEXT, False)}
