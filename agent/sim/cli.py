"""``gpulse demo`` and ``gpulse record``.

``gpulse demo`` runs the real agent (the same sampler, store, signals, exporters and API
as ``gpulse serve``) on a simulated fleet: ``FakeNvml`` over the scenario's device
models, behind the real ``NvmlBackend``, with the simulator's host source (or the real
host backend with ``--real-processes``), all on one ``ScaledClock``.

``gpulse record`` captures raw readings through ``NvmlBackend`` — from this node's
GPUs, or with ``--scenario`` from a simulated fleet (instantly, on a clock that jumps).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from agent.clock import Clock, ManualClock, MonotonicClock, ScaledClock
from agent.sim.capture import CaptureError, read_capture, record
from agent.sim.scenario import Scenario, ScenarioError, load_scenario, scenario_names, steady_scenario

if TYPE_CHECKING:
    from agent.backends import GpuBackend, HostSource
    from agent.config import Settings
    from agent.runtime import Runtime

log = logging.getLogger(__name__)
MAX_SPEED = 50.0


def register(subparsers: Any) -> None:
    from agent.cli_serve import add_settings_options

    demo = subparsers.add_parser(
        "demo",
        help="run the agent on a simulated GPU fleet",
        description="Run the real agent pipeline against a simulated fleet with physics, faults and ground "
        f"truth. Shipped scenarios: {', '.join(scenario_names())}. Without --scenario: 'default' "
        "(8 x H100-SXM showing every GPU time-accounting state).",
    )
    demo.add_argument("--scenario", metavar="FILE|NAME", help="a scenario YAML file or a shipped name")
    demo.add_argument(
        "--speed",
        type=float,
        default=None,
        metavar="X",
        help=f"simulated seconds per real second, 1..{MAX_SPEED:g} (default 1)",
    )
    demo.add_argument("--truth", metavar="FILE", help="write the ground truth here (JSON lines)")
    demo.add_argument(
        "--gpus", type=int, metavar="N", help="without --scenario: N GPUs running steady training"
    )
    demo.add_argument("--model", metavar="NAME", help="without --scenario: the GPU model (default H100-SXM)")
    demo.add_argument(
        "--replay", metavar="FILE", help="play a capture from 'gpulse record' instead of a scenario"
    )
    demo.add_argument(
        "--real-processes",
        action="store_true",
        help="run real OS processes for the workloads and read the real host (speed 1)",
    )
    demo.add_argument("--seed", type=int, help="override the scenario's seed")
    demo.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="stop after this many simulated seconds (overrides the scenario's duration_s)",
    )
    add_settings_options(demo)
    demo.set_defaults(func=run_demo)

    rec = subparsers.add_parser(
        "record",
        help="capture raw GPU readings to a file for replay",
        description="Read every GPU through NVML each interval and write the readings as JSON lines "
        "(see docs/simulator.md); 'gpulse demo --replay FILE' plays them back.",
    )
    rec.add_argument("--out", required=True, metavar="FILE", help="the capture file to write")
    rec.add_argument("--seconds", type=float, required=True, metavar="N", help="how long to record")
    rec.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="seconds between readings (0.1..60)"
    )
    rec.add_argument("--scenario", metavar="FILE|NAME", help="record a simulated fleet instead of this node")
    rec.set_defaults(func=run_record)


def _fail(command: str, message: str) -> int:
    print(f"gpulse {command}: {message}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------------------------------
# demo


def choose_scenario(args: argparse.Namespace) -> Scenario:
    """The scenario the flags ask for (raises ScenarioError / ValueError with the flag's name)."""
    if args.scenario and (args.gpus is not None or args.model):
        raise ValueError("--gpus/--model: they describe a steady fleet; leave them out with --scenario")
    if args.scenario:
        scenario = load_scenario(args.scenario)
    elif args.gpus is not None or args.model:
        scenario = steady_scenario(args.model or "H100-SXM", args.gpus if args.gpus is not None else 8)
    else:
        scenario = load_scenario("default")
    if args.duration is not None and args.duration <= 0:
        raise ValueError(f"--duration: must be > 0 (got {args.duration:g})")
    return scenario.with_overrides(seed=args.seed, duration_s=args.duration)


def run_demo(args: argparse.Namespace) -> int:
    from agent.cli_serve import configure_logging, settings_from_args
    from agent.nvml.backend import NvmlBackend
    from agent.nvml.fake import FakeNvml

    speed = 1.0 if args.speed is None else args.speed
    if not 1.0 <= speed <= MAX_SPEED:
        return _fail("demo", f"--speed: must be between 1 and {MAX_SPEED:g} (got {speed:g})")
    if args.real_processes and speed != 1.0:
        return _fail(
            "demo", "--speed: real processes run in real time; leave --speed out (or 1) with --real-processes"
        )
    if args.replay and (
        args.scenario or args.gpus is not None or args.model or args.real_processes or args.truth
    ):
        return _fail(
            "demo",
            "--replay: plays a capture as recorded; it takes no --scenario, --gpus, --model, "
            "--real-processes or --truth",
        )
    try:
        scenario = None if args.replay else choose_scenario(args)
        capture = read_capture(args.replay) if args.replay else None
    except (ScenarioError, CaptureError) as exc:
        return _fail("demo", str(exc))
    except ValueError as exc:
        return _fail("demo", str(exc))

    if args.interval_seconds is None:  # the scenario's interval, unless the flag says otherwise
        if scenario is not None:
            interval = scenario.interval_s
        else:
            assert capture is not None
            interval = float(capture.header.get("interval_s", 1.0))
        args.interval_seconds = max(0.1, min(60.0, interval))
    settings = settings_from_args(args)
    configure_logging(settings.log_level)

    _preload()  # import the agent before the clock starts: at 50x a second of imports is 50 simulated ones
    clock = ScaledClock(speed)
    stop = threading.Event()
    fleet = procs = None
    if capture is not None:
        from agent.sim.replay import ReplayHostSource, replay_models

        models: list[Any] = list(replay_models(capture))
        host: Any = ReplayHostSource(clock)
        what = f"replay of {args.replay} ({len(models)} GPUs, {capture.duration_s:g} s, looping)"
        duration = args.duration
    else:
        from agent.sim.fleet import Fleet

        assert scenario is not None
        try:
            fleet = Fleet.from_scenario(scenario, clock, truth=args.truth)
        except OSError as exc:
            return _fail("demo", f"--truth: cannot write {args.truth}: {exc.strerror or exc}")
        models = list(fleet.models)
        if args.real_processes:
            from agent.host.backend import HostBackend
            from agent.sim.realproc import RealProcesses

            procs = RealProcesses(fleet, clock)
            procs.start()
            host = HostBackend(
                procfs=settings.procfs, sysfs=settings.sysfs, cgroupfs=settings.cgroupfs, clock=clock
            )
        else:
            host = fleet.host_source
        what = f"scenario '{scenario.name}' ({len(models)} GPUs, seed {scenario.seed})"
        duration = scenario.duration_s

    fake = FakeNvml(models, clock)
    gpu = NvmlBackend(fake, clock, health_refresh_s=settings.health_interval_seconds)
    extra = f", truth -> {args.truth}" if args.truth else ""
    until = f", stops at {duration:g} s" if duration else ""
    print(
        f"gpulse demo: {what}, speed {speed:g}x, "
        f"sampling every {settings.interval_seconds:g} s{until}{extra}",
        flush=True,
    )
    if duration:
        threading.Thread(
            target=_stop_at, args=(clock, stop, duration), name="gpulse-demo-end", daemon=True
        ).start()
    try:
        from agent.runtime import run_agent

        return run_agent(demo_runtime(settings, gpu, host, clock, scenario), settings.listen)
    finally:
        stop.set()
        fake.release()
        if procs is not None:
            procs.stop()
        if fleet is not None:
            summary = fleet.finish(duration if duration else None)
            if args.truth:
                print(
                    f"gpulse demo: ground truth for {summary['duration_s']:g} simulated seconds "
                    f"in {args.truth}",
                    flush=True,
                )


def demo_runtime(
    settings: Settings, gpu: GpuBackend, host: HostSource, clock: Clock, scenario: Scenario | None
) -> Runtime:
    """The agent's runtime for the demo: owners come from the scenario, never from this machine's
    /proc or kubelet (simulated PIDs may be real, unrelated processes here). A replay has no owners."""
    from agent.runtime import Runtime
    from agent.sim.owners import SimOwners

    runtime = Runtime(settings, gpu, host, clock)
    if scenario is not None and settings.attribution.enabled:
        runtime.owners_provider = SimOwners(scenario, max_series=settings.attribution.max_series).provide
    return runtime


def _preload() -> None:
    import importlib

    for name in (
        "agent.runtime",
        "agent.api.app",
        "agent.signals.engine",
        "exporters.prometheus",
        "agent.sim.owners",
    ):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _stop_at(clock: Clock, stop: threading.Event, end: float) -> None:
    """At the scenario's end, stop the agent the way SIGTERM does (a clean shutdown)."""
    if not clock.wait(stop, end - clock.now()):
        os.kill(os.getpid(), signal.SIGTERM)


# ---------------------------------------------------------------------------------------------
# record


class FastForwardClock(ManualClock):
    """A clock that jumps ahead when waited on: records a simulated fleet as fast as it can be read."""

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        if not stop.is_set() and seconds > 0:
            self.advance(seconds)
        return stop.is_set()


def run_record(args: argparse.Namespace) -> int:
    from agent.nvml.backend import NvmlBackend

    if not 0.1 <= args.interval <= 60:
        return _fail("record", f"--interval: must be between 0.1 and 60 seconds (got {args.interval:g})")
    if not 0 < args.seconds <= 7 * 86400:
        return _fail("record", f"--seconds: must be between 0 and a week (got {args.seconds:g})")
    fake = None
    clock: Clock
    if args.scenario:
        from agent.nvml.fake import FakeNvml
        from agent.sim.fleet import Fleet

        try:
            scenario = load_scenario(args.scenario)
        except ScenarioError as exc:
            return _fail("record", str(exc))
        clock = FastForwardClock()
        fleet = Fleet.from_scenario(scenario, clock)
        fake = FakeNvml(fleet.models, clock)
        backend = NvmlBackend(fake, clock, health_refresh_s=0.0)  # a recording keeps every raw value
    else:
        clock = MonotonicClock()
        backend = NvmlBackend(clock=clock, health_refresh_s=0.0)
    if not backend.start():
        print(f"gpulse record: nothing to record: {backend.status_message}", file=sys.stderr)
        return 1
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        with open(args.out, "w") as out:
            lines = record(
                backend,
                clock,
                out,
                seconds=args.seconds,
                interval_s=args.interval,
                stop=stop,
                progress=None if args.scenario else _progress(args.seconds),
            )
    except OSError as exc:
        return _fail("record", f"--out: cannot write {args.out}: {exc.strerror or exc}")
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if fake is not None:
            fake.release()
        with contextlib.suppress(Exception):
            backend.close()
    print(
        f"gpulse record: {lines} readings of {len(backend.identities())} GPUs in {args.out}", file=sys.stderr
    )
    return 0


def _progress(total: float) -> Any:
    def show(elapsed: float) -> None:
        print(f"\rrecorded {elapsed:5.0f} / {total:g} s", end="", file=sys.stderr, flush=True)

    return show


def main(argv: list[str] | None = None) -> int:
    """Run ``demo``/``record`` without the rest of the CLI (the project's ``gpulse`` wires these in)."""
    parser = argparse.ArgumentParser(prog="gpulse")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
