"""Which pod and container each GPU is allocated to: the kubelet pod-resources API (v1 ``List``).

The kubelet serves the API on a unix socket (by default
``/var/lib/kubelet/pod-resources/kubelet.sock``). ``KubeletPods`` calls ``List`` on its
own timer thread and swaps in a fresh device map each time, so a scrape reads a ready
map and never waits on the kubelet; a device the map does not hold is simply absent
(misses are as cheap as hits). A pod that ended is gone from the next answer, so it
drops out within one refresh.

When the socket is missing or the kubelet does not answer within the timeout, the last
map is kept for ``keep_stale_seconds`` (a kubelet restart takes a few seconds), then
dropped; the failure is logged once when it starts, and the ``kubernetes`` collector
reports it until a call succeeds again.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent.attribution.settings import AttributionSettings
from agent.clock import Clock, MonotonicClock
from agent.snapshot import CollectorStatus

log = logging.getLogger(__name__)

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_MIG_OLD = re.compile(
    r"MIG-(GPU-[0-9a-fA-F-]+)/(\d+)/(\d+)"
)  # MIG-GPU-<gpu uuid>/<gi>/<ci> (drivers before R470)
_MIG = re.compile(rf"MIG-{_UUID}")  # MIG-<mig device uuid>
_GPU = re.compile(rf"GPU-{_UUID}")
_INDEX = re.compile(r"^(\d+)(?::(\d+))?$")  # device plugin's index strategy: "3", or "3:1" for a MIG slice


@dataclass(frozen=True)
class DeviceRef:
    """What a device id names: a whole GPU (by UUID or index) or a MIG slice of one."""

    gpu_uuid: str | None = None  # "GPU-..." as NVML spells it
    index: int | None = None
    mig_uuid: str | None = None  # "MIG-..." of the MIG device (its parent comes from NVML)
    mig: str | None = None  # "gi/ci" or the MIG index, for display


def parse_device_id(device_id: str) -> DeviceRef | None:
    device_id = device_id.strip()
    m = _MIG_OLD.fullmatch(device_id)
    if m:
        return DeviceRef(gpu_uuid=m.group(1), mig=f"{m.group(2)}/{m.group(3)}")
    if device_id.startswith("MIG-"):
        return DeviceRef(mig_uuid=device_id, mig=device_id)
    if device_id.startswith("GPU-"):
        return DeviceRef(gpu_uuid=device_id)
    m = _INDEX.match(device_id)
    if m:
        return DeviceRef(index=int(m.group(1)), mig=m.group(2))
    # a longer name that embeds the UUID (a CDI device name from Dynamic Resource Allocation)
    m = _MIG_OLD.search(device_id)
    if m:
        return DeviceRef(gpu_uuid=m.group(1), mig=f"{m.group(2)}/{m.group(3)}")
    m = _MIG.search(device_id)
    if m:
        return DeviceRef(mig_uuid=m.group(0), mig=m.group(0))
    m = _GPU.search(device_id)
    if m:
        return DeviceRef(gpu_uuid=m.group(0))
    return None


@dataclass(frozen=True)
class PodContainer:
    pod: str
    namespace: str
    container: str


@dataclass(frozen=True)
class Allocation:
    owner: PodContainer
    resource: str
    device_id: str
    ref: DeviceRef


@dataclass
class DeviceMap:
    """Allocations from one ``List`` answer, indexed by how a device can be named."""

    by_gpu_uuid: dict[str, list[Allocation]] = field(default_factory=dict)  # key: upper-case UUID
    by_mig_uuid: dict[str, list[Allocation]] = field(default_factory=dict)
    by_index: dict[int, list[Allocation]] = field(default_factory=dict)
    pods: set[tuple[str, str]] = field(default_factory=set)  # (namespace, pod) of every pod listed

    def add(self, alloc: Allocation) -> None:
        ref = alloc.ref
        if ref.gpu_uuid is not None:
            self.by_gpu_uuid.setdefault(ref.gpu_uuid.upper(), []).append(alloc)
        elif ref.mig_uuid is not None:
            self.by_mig_uuid.setdefault(ref.mig_uuid.upper(), []).append(alloc)
        elif ref.index is not None:
            self.by_index.setdefault(ref.index, []).append(alloc)

    def for_gpu(self, index: int, uuid: str, mig_parents: dict[str, int]) -> list[Allocation]:
        found = list(self.by_gpu_uuid.get(uuid.upper(), ()))
        found += self.by_index.get(index, ())
        if self.by_mig_uuid:
            parents = {k.upper(): v for k, v in mig_parents.items()}
            for mig_uuid, allocs in self.by_mig_uuid.items():
                if parents.get(mig_uuid) == index:
                    found += allocs
        return found

    def unplaced_mig(self, mig_parents: dict[str, int]) -> list[Allocation]:
        parents = {k.upper() for k in mig_parents}
        return [a for key, allocs in self.by_mig_uuid.items() if key not in parents for a in allocs]


def device_map(response: object, settings: AttributionSettings) -> DeviceMap:
    """Build a DeviceMap from a ``ListPodResourcesResponse``."""
    out = DeviceMap()
    for pod in getattr(response, "pod_resources", ()):
        out.pods.add((pod.namespace, pod.name))
        for container in pod.containers:
            owner = PodContainer(pod.name, pod.namespace, container.name)
            for devices in container.devices:
                if not devices.resource_name.startswith(tuple(settings.gpu_resource_prefixes)):
                    continue
                for device_id in devices.device_ids:
                    ref = parse_device_id(device_id)
                    if ref is not None:
                        out.add(Allocation(owner, devices.resource_name, device_id, ref))
            for dynamic in container.dynamic_resources:
                for claim in dynamic.claim_resources:
                    # DRA: the CDI device names carry the GPU's UUID with NVIDIA's driver
                    names = [cdi.name for cdi in claim.cdi_devices] + [claim.device_name]
                    for name in names:
                        ref = parse_device_id(name) if name else None
                        if ref is not None and ref.index is None:
                            out.add(Allocation(owner, claim.driver_name or "dra", name, ref))
                            break
    return out


PODRESOURCES_SERVICE = "v1.PodResourcesLister"  # the kubelet's pod-resources v1 API
PODRESOURCES_LIST = "List"


class PodResourcesClient:
    """One gRPC channel to the kubelet's socket; ``list`` raises on any failure."""

    def __init__(self, socket_path: str, timeout_seconds: float) -> None:
        import grpc

        # The generated message module builds its classes at import time, which type checkers
        # cannot see: load it by name (it is excluded from linting and type checks).
        self._pb2: Any = importlib.import_module("agent.attribution.podresources_pb2")
        self.socket_path = socket_path
        self.timeout = timeout_seconds
        self._channel = grpc.insecure_channel(
            f"unix://{socket_path}", options=[("grpc.max_receive_message_length", 16 * 2**20)]
        )
        # The one RPC the agent calls; no generated service stub is needed for a single method.
        self._list = self._channel.unary_unary(
            f"/{PODRESOURCES_SERVICE}/{PODRESOURCES_LIST}",
            request_serializer=self._pb2.ListPodResourcesRequest.SerializeToString,
            response_deserializer=self._pb2.ListPodResourcesResponse.FromString,
        )

    def list(self) -> object:
        return self._list(self._pb2.ListPodResourcesRequest(), timeout=self.timeout)

    def close(self) -> None:
        self._channel.close()


class KubeletPods:
    """The pod-resources device map, refreshed on a timer thread of its own."""

    def __init__(self, settings: AttributionSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self._client: PodResourcesClient | None = None
        self._lock = threading.Lock()
        self._map: DeviceMap | None = None
        self._map_time: float | None = None
        self._status: CollectorStatus | None = None
        self._seen_socket = False
        self._absent_logged = False
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.kubernetes != "off"

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="gpulse-kubelet", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.settings.kubelet_timeout_seconds + 1.0)
        if self._client is not None:
            self._client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            if self.clock.wait(self._stop, self.settings.kubelet_refresh_seconds):
                return

    def current(self) -> tuple[DeviceMap | None, CollectorStatus | None]:
        """The map to use now (None when there is none) and the collector status (None: not on Kubernetes)."""
        with self._lock:
            return self._map, self._status

    def refresh(self) -> bool:
        """Call ``List`` once and swap in its map; returns whether it succeeded. Never raises."""
        path = self.settings.kubelet_socket
        start = time.perf_counter()
        if not os.path.exists(path):
            if not self._seen_socket and self.settings.kubernetes == "auto":
                # Not a Kubernetes node (yet): no failure to report, one line to say so.
                if not self._absent_logged:
                    log.info("kubelet pod-resources socket %s not found: no Kubernetes pod attribution", path)
                    self._absent_logged = True
                return False
            self._fail(f"kubelet pod-resources socket {path} is missing", time.perf_counter() - start)
            return False
        self._seen_socket = True
        try:
            if self._client is None:
                self._client = PodResourcesClient(path, self.settings.kubelet_timeout_seconds)
            response = self._client.list()
            new_map = device_map(response, self.settings)
        except Exception as exc:  # grpc.RpcError (unavailable, deadline exceeded) or a bad answer
            self._fail(
                f"kubelet pod-resources List on {path} failed: {_describe(exc)}", time.perf_counter() - start
            )
            return False
        now = self.clock.now()
        with self._lock:
            self._map, self._map_time = new_map, now
            self._status = CollectorStatus(True, time.perf_counter() - start, now)
        if self._failing:
            log.info("kubelet pod-resources List on %s works again (%d pods)", path, len(new_map.pods))
        self._failing = False
        return True

    def _fail(self, message: str, duration: float) -> None:
        now = self.clock.now()
        with self._lock:
            last = self._status.last_success if self._status is not None else None
            self._status = CollectorStatus(False, duration, last, message)
            keep = self.settings.kubelet_keep_stale_seconds
            if self._map_time is not None and now - self._map_time >= keep:
                self._map, self._map_time = None, None  # too old to trust: pods may have ended meanwhile
        if not self._failing:
            log.warning(
                "%s; pod labels come from the last answer for up to %.0f s, then from cgroups only",
                message,
                self.settings.kubelet_keep_stale_seconds,
            )
        self._failing = True


def _describe(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if callable(code) and callable(details):
        try:
            return f"{code().name}: {details()}"
        except Exception:
            pass
    return f"{type(exc).__name__}: {exc}"
