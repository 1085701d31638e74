"""Measure what a py-spy capture costs: the target's slowdown, py-spy's own CPU, file sizes.

    python -m agent.profiling.bench [--seconds 5] [--rate 100]

Starts a CPU-bound Python process that counts its own loop iterations, measures its
rate without and then during a capture, and prints the figures. On a shared or loaded
machine run it a few times: the baseline moves with the load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from agent.profiling.capture import run_capture
from agent.profiling.procinfo import ProcInfo
from agent.profiling.pyspy import PySpy, RecordOptions
from agent.profiling.render import render

TARGET = """
import multiprocessing as mp, sys, time

def count(report):
    n = 0
    last = time.monotonic()
    while True:
        for i in range(1000):
            n += 1
        now = time.monotonic()
        if now - last >= 0.25:
            if report:
                print(f"{now:.3f} {n}", flush=True)
            n = 0
            last = now

if __name__ == "__main__":
    workers = int(sys.argv[1])
    for _ in range(workers):
        mp.Process(target=count, args=(False,), daemon=True).start()
    count(True)
"""


def _rates(proc: subprocess.Popen[str], samples: list[tuple[float, int]], stop: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if stop.is_set():
            break
        t, n = line.split()
        samples.append((float(t), int(n)))


def _mean_rate(samples: list[tuple[float, int]], start: float, end: float) -> float:
    window = [n for t, n in samples if start <= t <= end]
    return sum(window) / (len(window) * 0.25) if window else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1, help="child processes (subprocesses are profiled)")
    parser.add_argument("--nonblocking", action="store_true", help="sample without pausing the target")
    args = parser.parse_args(argv)

    procinfo = ProcInfo()
    spy = PySpy(procinfo=procinfo)
    with tempfile.TemporaryDirectory(prefix="gpulse-bench-") as tmp:
        script = Path(tmp) / "target.py"
        script.write_text(textwrap.dedent(TARGET))
        proc = subprocess.Popen(
            [sys.executable, str(script), str(args.workers)], stdout=subprocess.PIPE, text=True
        )
        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        reader = threading.Thread(target=_rates, args=(proc, samples, stop), daemon=True)
        reader.start()
        try:
            time.sleep(1.0)  # warm up
            base_start = time.monotonic()
            time.sleep(args.seconds)
            base_end = time.monotonic()

            cpu_before = os.times()
            t0 = time.monotonic()
            capture = run_capture(
                spy,
                procinfo,
                RecordOptions(
                    pid=proc.pid,
                    seconds=args.seconds,
                    rate_hz=args.rate,
                    subprocesses=True,
                    nonblocking=args.nonblocking,
                ),
                Path(tmp) / "stacks.txt",
            )
            t1 = time.monotonic()
            cpu_after = os.times()
            # py-spy is our child: its CPU shows in our children's times.
            pyspy_cpu = (cpu_after.children_user + cpu_after.children_system) - (
                cpu_before.children_user + cpu_before.children_system
            )
            # Skip py-spy's attach (first 0.5 s) when measuring the target during sampling.
            during = _mean_rate(samples, t0 + 0.5, t1 - 0.25)
            baseline = _mean_rate(samples, base_start, base_end)

            r0 = time.perf_counter()
            rendered = {
                fmt: render(fmt, capture.stacks, rate_hz=args.rate, title="bench")
                for fmt in ("raw", "speedscope", "flamegraph")
            }
            render_ms = (time.perf_counter() - r0) * 1000
        finally:
            stop.set()
            for pid in reversed(procinfo.tree(proc.pid)):
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
            proc.wait()

    summary = capture.summary
    mode = "non-blocking" if args.nonblocking else "blocking (py-spy pauses the target per sample)"
    print(f"capture: {args.seconds} s at {args.rate} Hz, {args.workers} worker process(es), {mode}")
    print(f"  samples recorded:           {summary['samples']}")
    print(f"  wall time of the capture:   {t1 - t0:.2f} s (py-spy start-up included)")
    print(
        f"  py-spy CPU:                 {pyspy_cpu:.2f} s ({pyspy_cpu / (t1 - t0) * 100:.1f} % of one core)"
    )
    print(f"  target loop rate, baseline: {baseline:,.0f} iterations/s")
    print(
        f"  target loop rate, sampled:  {during:,.0f} iterations/s ({(during / baseline - 1) * 100:+.1f} %)"
    )
    for fmt, text in rendered.items():
        print(f"  {fmt:<11} {len(text.encode()):>9,} bytes")
    print(f"  rendering all three:        {render_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
