"""A simulated fleet built from a scenario: device models, host side and ground truth.

In-process use (benchmarks, tests)::

    fleet = Fleet.from_scenario(load_scenario("default"), clock, truth="truth.jsonl")
    nvml = FakeNvml(fleet.models, clock)      # each model is a DeviceModel
    host = fleet.host_source                  # a HostSource for the same workloads
    ...
    summary = fleet.finish()                  # runs every GPU to the end, writes the summary
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO

from agent.clock import Clock
from agent.sim.device import SimIdentity
from agent.sim.host import SimHostSource
from agent.sim.physics import SimDevice, mix, noise
from agent.sim.scenario import Scenario
from agent.sim.truth import GpuTruth, TruthSink
from agent.sim.workload import Segment, Timeline
from agent.specs import SPECS, GpuSpec

# PCI bus numbers of the eight GPUs on an HGX H100 baseboard; larger fleets continue the pattern.
_HGX_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
_VBIOS = {
    "hopper": "96.00.74.00.0D",
    "blackwell": "97.00.3A.00.0B",
    "ampere": "92.00.45.00.06",
    "ada": "95.04.5A.00.02",
    "turing": "90.04.96.00.02",
    "volta": "88.00.80.00.01",
}
PID_STRIDE_GPU = 4000
PID_STRIDE_SEGMENT = 300  # room for the main process and up to 256 workers


def make_identity(seed: int, index: int, spec: GpuSpec) -> SimIdentity:
    key = mix(seed, index, 10)
    words = [int((noise(key, i) + 1.0) * 2**31) & 0xFFFFFFFF for i in range(4)]
    hexs = "".join(f"{w:08x}" for w in words)
    uuid = f"GPU-{hexs[0:8]}-{hexs[8:12]}-{hexs[12:16]}-{hexs[16:20]}-{hexs[20:32]}"
    if index < len(_HGX_BUSES):
        bus, domain = _HGX_BUSES[index], 0
    else:
        bus, domain = _HGX_BUSES[index % len(_HGX_BUSES)], index // len(_HGX_BUSES)
    major, _, minor = spec.compute_capability.partition(".")
    return SimIdentity(
        uuid=uuid,
        name=spec.name,
        pci_bus_id=f"{domain:08X}:{bus:02X}:00.0",
        serial=f"165{words[1] % 10**10:010d}",
        vbios_version=_VBIOS.get(spec.architecture, "90.00.00.00.01"),
        compute_capability=(int(major or 0), int(minor or 0)),
        minor_number=index,
    )


class Fleet:
    """The modelled GPUs of one scenario, the host side of their workloads and the truth recorder."""

    def __init__(
        self,
        scenario: Scenario,
        models: list[SimDevice],
        sink: TruthSink,
        host_source: SimHostSource,
        *,
        start: float,
        pid_base: int,
        truth_file: IO[str] | None = None,
    ) -> None:
        self.scenario = scenario
        self.models = models
        self.truth_sink = sink
        self.host_source = host_source
        self.start = start
        self.pid_base = pid_base
        self._truth_file = truth_file
        self._pid_overrides: dict[tuple[int, int], int] = {}
        self._worker_overrides: dict[tuple[int, int], list[int]] = {}
        self._finished: dict[str, object] | None = None

    @classmethod
    def from_scenario(
        cls,
        scenario: Scenario,
        clock: Clock | None = None,
        *,
        truth: str | Path | IO[str] | None = None,
        start: float = 0.0,
        truth_window_s: float = 1.0,
    ) -> Fleet:
        """Build the fleet. ``start`` is the clock time at which the scenario begins (0 for a fresh
        ``ScaledClock``); ``truth`` is a path or stream for the JSON-lines ground truth."""
        truth_file: IO[str] | None = None
        out: IO[str] | None
        if truth is None:
            out = None
        elif isinstance(truth, (str, Path)):
            truth_file = out = open(truth, "w")  # noqa: SIM115 - closed by finish()
        else:
            out = truth
        sink = TruthSink(out)
        pid_base = 2000 + int((noise(mix(scenario.seed, 99), 0) + 1.0) * 10000)
        models: list[SimDevice] = []
        fleet_ref: list[Fleet] = []

        def pid_for_gpu(index: int) -> Callable[[Segment], int]:
            return lambda seg: fleet_ref[0].pid(index, seg)

        for index, entry in enumerate(scenario.gpus):
            spec = SPECS[entry.model]
            identity = make_identity(scenario.seed, index, spec)
            timeline = Timeline.for_gpu(scenario, index, spec)
            recorder = GpuTruth(
                sink, index, identity.uuid, window_s=truth_window_s, limit=scenario.duration_s
            )
            models.append(
                SimDevice(
                    index=index,
                    spec=spec,
                    identity=identity,
                    entry=entry,
                    timeline=timeline,
                    events=list(scenario.events),
                    seed=scenario.seed,
                    start=start,
                    truth=recorder,
                    pid_for=pid_for_gpu(index),
                )
            )
        host = SimHostSource(
            scenario,
            models,
            clock,
            start=start,
            pid_of=lambda i, seg: fleet_ref[0].pid(i, seg),
            workers_of=lambda i, seg, n: fleet_ref[0].worker_pids(i, seg, n),
        )
        fleet = cls(scenario, models, sink, host, start=start, pid_base=pid_base, truth_file=truth_file)
        fleet_ref.append(fleet)
        return fleet

    # -- processes ----------------------------------------------------------------------------

    def pid(self, index: int, seg: Segment) -> int:
        """The PID of the main process of ``seg`` on GPU ``index`` (real one where overridden)."""
        real = self._pid_overrides.get((index, seg.number))
        if real is not None:
            return real
        return self.pid_base + index * PID_STRIDE_GPU + seg.number * PID_STRIDE_SEGMENT

    def set_real_pid(
        self, index: int, segment_number: int, pid: int, workers: list[int] | None = None
    ) -> None:
        """Report a real OS process (and its workers) as the owner of a segment (real-process mode)."""
        self._pid_overrides[(index, segment_number)] = pid
        if workers is not None:
            self._worker_overrides[(index, segment_number)] = list(workers)

    def worker_pids(self, index: int, seg: Segment, count: int) -> list[int]:
        """PIDs of a segment's data-loader workers: the real ones where reported, else simulated ones."""
        real = self._worker_overrides.get((index, seg.number))
        if real is not None:
            return list(real)
        main = self.pid(index, seg)
        return [main + w for w in range(1, count + 1)]

    # -- running ------------------------------------------------------------------------------

    def advance_to(self, t: float) -> None:
        for m in self.models:
            m.advance_to(t)

    def finish(self, end_s: float | None = None) -> dict[str, object]:
        """Run every GPU to the end (scenario time) and write the truth summary; returns it.

        Without an end (an open-ended demo), the end is the furthest any GPU has run, so that
        every GPU's truth covers the same span.
        """
        if self._finished is not None:
            return self._finished
        if end_s is None:
            end_s = self.scenario.duration_s
        if end_s is None:
            end_s = max((m.stepped_until for m in self.models), default=0.0)
        for m in self.models:
            if m.truth is not None and m.truth.limit is None:
                m.truth.limit = end_s
            m.finish(end_s)
        self.truth_sink.close(end_s)
        if self._truth_file is not None:
            self._truth_file.close()
        self._finished = self.truth_sink.summary()
        return self._finished
