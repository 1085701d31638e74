"""What one ``NvmlBackend.read()`` costs, measured against ``FakeNvml``.

    python -m agent.nvml.bench [--gpus 8] [--ticks 300] [--model H100-SXM] [--process-every 5]
                               [--xid-seconds 5]

Runs ticks of simulated seconds (a stepped clock: no sleeping), reads every GPU once per
tick (processes every ``--process-every`` ticks, as the sampler does), and prints the
cost per read: in total, inside the fake (each fake function timed through a thin
proxy) and therefore in the backend itself, plus the NVML calls per read and what that
comes to as a share of one CPU core at one read per GPU per second.

Then, for ``--xid-seconds`` of real time, it runs the agent's XID loop (``wait_events``
of 0.5 s, again and again) over the same fleet on the real clock, with no XID raised, and
prints that thread's CPU time per second: what waiting for events costs while nothing happens.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.clock import MonotonicClock
from agent.nvml.backend import NvmlBackend
from agent.nvml.fake import FakeNvml
from agent.nvml.steady import steady_fleet
from agent.specs import SPECS


class StepClock:
    """Simulated seconds that move only when told to, read as cheaply as the demo's scaled clock."""

    speed = 1.0

    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return stop.wait(0)

    def epoch(self) -> float:
        return 1_700_000_000.0 + self.t


class TimedNvml:
    """Passes every call through to the fake and adds up the time spent inside it."""

    def __init__(self, nvml: FakeNvml) -> None:
        self._nvml = nvml
        self.inside = 0.0
        self.count = 0

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._nvml, name)
        if not (callable(value) and name.startswith("nvml")) or isinstance(value, type):
            return value

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self.inside += time.perf_counter() - start
                self.count += 1

        return timed


def run(gpus: int, ticks: int, model: str, process_every: int) -> dict[str, float]:
    clock = StepClock(1000.0)
    fake = FakeNvml(steady_fleet(SPECS[model], gpus), clock)
    timed = TimedNvml(fake)
    backend = NvmlBackend(timed, clock)
    if not backend.start():
        raise SystemExit(backend.status_message)
    read: Callable[..., Any] = backend.read
    for warm in range(3):  # baselines: first samples, first GPM window, static values
        clock.advance(1.0)
        for i in range(gpus):
            read(i, processes=warm == 0)
    timed.inside, timed.count = 0.0, 0
    per_read: list[float] = []
    cpu0 = time.process_time()
    for tick in range(ticks):
        clock.advance(1.0)
        processes = tick % process_every == 0
        for i in range(gpus):
            start = time.perf_counter()
            read(i, processes=processes)
            per_read.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu0
    inside, count = timed.inside, timed.count
    backend.close()
    reads = len(per_read)
    total = sum(per_read)
    return {
        "reads": reads,
        "p50_us": statistics.median(per_read) * 1e6,
        "p99_us": sorted(per_read)[int(0.99 * (reads - 1))] * 1e6,
        "mean_us": total / reads * 1e6,
        "fake_us": inside / reads * 1e6,
        "backend_us": (total - inside) / reads * 1e6,
        "calls_per_read": count / reads,
        "cpu_us_per_read": cpu / reads * 1e6,
        "core_pct_at_1hz": cpu / reads * gpus * 100,
    }


def xid_wait_cost(gpus: int, seconds: float, model: str) -> dict[str, float]:
    """CPU of a thread doing what the agent's XID thread does, over ``seconds`` of real time."""
    clock = MonotonicClock()
    fake = FakeNvml(steady_fleet(SPECS[model], gpus), clock)
    backend = NvmlBackend(fake, clock)
    if not backend.start():
        raise SystemExit(backend.status_message)
    stop = threading.Event()
    result: dict[str, float] = {}

    def loop() -> None:
        cpu0, waits = time.thread_time(), 0
        while not stop.is_set():
            backend.wait_events(0.5)  # the agent's XID_WAIT_SECONDS
            waits += 1
        result["cpu_s"], result["waits"] = time.thread_time() - cpu0, waits

    thread = threading.Thread(target=loop)
    thread.start()
    stop.wait(seconds)
    stop.set()
    thread.join()
    backend.close()
    return {
        "cpu_ms_per_s": result["cpu_s"] / seconds * 1e3,
        "core_pct": result["cpu_s"] / seconds * 100,
        "waits": result["waits"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gpus", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--model", default="H100-SXM", choices=sorted(SPECS))
    parser.add_argument("--process-every", type=int, default=5)
    parser.add_argument("--xid-seconds", type=float, default=5.0, help="0: skip the XID wait figure")
    args = parser.parse_args(argv)
    print(f"NvmlBackend.read() against FakeNvml ({args.model}, processes every {args.process_every} reads)")
    print(
        f"{'GPUs':>5} {'reads':>7} {'p50 µs':>8} {'p99 µs':>8} {'mean µs':>8} {'in fake':>8} "
        f"{'backend':>8} {'calls':>6} {'% core @1 Hz':>13}"
    )
    for gpus in args.gpus:
        r = run(gpus, args.ticks, args.model, args.process_every)
        print(
            f"{gpus:>5} {r['reads']:>7.0f} {r['p50_us']:>8.0f} {r['p99_us']:>8.0f} {r['mean_us']:>8.0f} "
            f"{r['fake_us']:>8.0f} {r['backend_us']:>8.0f} {r['calls_per_read']:>6.1f} "
            f"{r['core_pct_at_1hz']:>12.2f}%"
        )
    if args.xid_seconds > 0:
        print(f"XID event wait (wait_events(0.5) in a loop, no XID, {args.xid_seconds:g} s of real time)")
        print(f"{'GPUs':>5} {'waits':>7} {'CPU ms/s':>9} {'% core':>7}")
        for gpus in args.gpus:
            x = xid_wait_cost(gpus, args.xid_seconds, args.model)
            print(f"{gpus:>5} {x['waits']:>7.0f} {x['cpu_ms_per_s']:>9.3f} {x['core_pct']:>6.3f}%")


if __name__ == "__main__":
    main()
