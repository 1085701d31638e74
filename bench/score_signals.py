"""Score gpulse's derived signals against the simulated fleet's ground truth.

Runs each shipped scenario (or the ones named) in-process at full speed on a manual clock —
the simulator's devices behind the fake NVML, read by the real NVML backend, the simulator's
host source, the signal engine — at each sampling interval, and prints per state the
time-weighted precision, recall and F1, and the estimated MFU's error against the true
FLOPs over steady 60 s windows. Exits 1 when a target is missed (F1 >= 0.9 for every state
the scenarios contain; MFU within 0.05).

    python bench/score_signals.py                       # every shipped scenario, 1 s and 5 s
    python bench/score_signals.py default thermal --intervals 1 2 5 --duration 600
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.model import GPU_STATES
from agent.signals.scoring import ScoreResult, StateScore, format_table, run_scenario
from agent.sim.scenario import scenario_names

F1_TARGET = 0.9
MFU_TARGET = 0.05


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*",
                        help="shipped scenario names or YAML paths (default: all shipped)")
    parser.add_argument("--intervals", nargs="+", type=float, default=[1.0, 5.0],
                        help="sampling intervals, s")
    parser.add_argument("--duration", type=float, default=None,
                        help="simulated seconds (default: the scenario's duration_s, else 300)")
    parser.add_argument("--per-scenario", action="store_true", help="also print a table per scenario")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # a GPU falling off the bus is part of the show

    names = args.scenarios or scenario_names()
    results: list[ScoreResult] = []
    for name in names:
        for interval in args.intervals:
            start = time.perf_counter()
            r = run_scenario(name, interval, duration_s=args.duration)
            took = time.perf_counter() - start
            print(f"# {name} at {interval:g} s: {r.duration_s:.0f} simulated s in {took:.1f} s",
                  file=sys.stderr)
            results.append(r)
            if args.per_scenario:
                print(f"\n## {name}, {interval:g} s\n\n{format_table([r])}\n")
    print(format_table(results))
    return 0 if _targets_met(results) else 1


def _targets_met(results: list[ScoreResult]) -> bool:
    ok = True
    for interval in sorted({r.interval_s for r in results}):
        totals = {s: StateScore() for s in GPU_STATES}
        for r in results:
            if r.interval_s == interval:
                for s, sc in r.states.items():
                    totals[s].add(sc)
        for s, sc in totals.items():
            if sc.truth_seconds > 0 and (sc.f1 or 0.0) < F1_TARGET:
                print(f"MISSED: {s} F1 {sc.f1:.3f} < {F1_TARGET} at {interval:g} s", file=sys.stderr)
                ok = False
    for r in results:
        if r.mfu_max_error is not None and r.mfu_max_error > MFU_TARGET:
            print(f"MISSED: {r.scenario} at {r.interval_s:g} s MFU error {r.mfu_max_error:.3f} > "
                  f"{MFU_TARGET}", file=sys.stderr)
            ok = False
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
