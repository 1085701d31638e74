"""Micro-benchmark of the Prometheus renderer on fully populated snapshots.

    python bench/bench_render.py [--gpus 8 64] [--processes-per-gpu 2] [--runs 200]

For each fleet size it prints the series count, body sizes, and the cost of each step a
tick or a scrape can pay: rendering (text body included), building the OpenMetrics body,
gzip at levels 1 and 6, and answering a scrape from the cache. Times are per call:
minimum, median and 99th percentile of wall time, and mean CPU time. On a shared machine
the minimum is the steadiest figure of what the code itself costs.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporters.examples import full_snapshot
from exporters.prometheus import OPENMETRICS, TEXT, render

PROMETHEUS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


def measure(fn: Callable[[], object], runs: int) -> tuple[float, float, float, float]:
    """(min, median and p99 wall ms, mean CPU ms) over ``runs`` calls, after two warm-up calls."""
    fn()
    fn()
    walls: list[float] = []
    cpu0 = time.process_time()
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / runs
    walls.sort()
    p99 = walls[min(len(walls) - 1, int(len(walls) * 0.99))]
    return walls[0] * 1e3, statistics.median(walls) * 1e3, p99 * 1e3, cpu * 1e3


def bench_fleet(gpus: int, processes_per_gpu: int, runs: int) -> None:
    snapshot = full_snapshot(gpus, processes_per_gpu)
    # The renderer re-formats only values that changed since its last call: alternate two
    # ticks' snapshots (every counter moves) so each call pays what a real tick pays.
    ticks = [snapshot, full_snapshot(gpus, processes_per_gpu, uptime=3601.0)]
    turn = [0]

    def next_tick() -> object:
        turn[0] ^= 1
        return ticks[turn[0]]

    exposition = render(snapshot)
    text = exposition.body(TEXT)
    kib = {level: len(gzip.compress(text, level)) / 1024 for level in (1, 6)}
    print(
        f"\n{gpus} GPUs, {processes_per_gpu} processes each: {exposition.series} series, "
        f"{exposition.families} families; text {len(text) / 1024:.0f} KiB, "
        f"gzip -1 {kib[1]:.0f} KiB, gzip -6 {kib[6]:.0f} KiB"
    )
    rows: list[tuple[str, Callable[[], object], int]] = [
        ("render (text body included)", lambda: render(next_tick()), runs),  # type: ignore[arg-type]
        ("render + OpenMetrics body", lambda: render(next_tick()).body(OPENMETRICS),  # type: ignore[arg-type]
         max(20, runs // 4)),
        ("render of an unchanged snapshot", lambda: render(snapshot), runs),
        ("gzip level 1 of the text body", lambda: gzip.compress(text, 1, mtime=0), max(20, runs // 4)),
        ("gzip level 6 of the text body", lambda: gzip.compress(text, 6, mtime=0), max(20, runs // 4)),
        ("scrape from cache (negotiate)", lambda: exposition.negotiate(PROMETHEUS_ACCEPT, "gzip"), runs),
    ]
    for name, fn, n in rows:
        best, p50, p99, cpu = measure(fn, n)
        print(f"{name:<34}{best:>9.3f}{p50:>9.3f}{p99:>9.3f}{cpu:>9.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--processes-per-gpu", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args(argv)

    print(f"{'step':<34}{'min ms':>9}{'p50 ms':>9}{'p99 ms':>9}{'cpu ms':>9}")
    for gpus in args.gpus:
        bench_fleet(gpus, args.processes_per_gpu, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
