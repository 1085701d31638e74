"""A real gRPC server implementing the kubelet pod-resources v1 API on a unix socket, for tests."""

from __future__ import annotations

import importlib
import os
import threading
from concurrent import futures
from typing import Any

import grpc

# generated modules: their classes are built at import time, which type checkers cannot see
pb: Any = importlib.import_module("agent.attribution.podresources_pb2")
pb_grpc: Any = importlib.import_module("agent.attribution.podresources_pb2_grpc")


def pod(name: str, namespace: str, containers: dict[str, list[tuple[str, list[str]]]]) -> Any:
    """containers: name -> [(resource name, [device ids])]."""
    return pb.PodResources(
        name=name,
        namespace=namespace,
        containers=[
            pb.ContainerResources(
                name=cname,
                devices=[pb.ContainerDevices(resource_name=r, device_ids=ids) for r, ids in devices],
                cpu_ids=[2, 3],
            )
            for cname, devices in containers.items()
        ],
    )


class FakeKubelet(pb_grpc.PodResourcesListerServicer):  # type: ignore[misc]  # Any base
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.pods: list[Any] = []
        self.calls = 0
        self.hang = threading.Event()  # set: List blocks until released
        self.release = threading.Event()
        self._server: Any = None

    def List(self, request: Any, context: Any) -> Any:
        self.calls += 1
        if self.hang.is_set():
            self.release.wait(10)
        return pb.ListPodResourcesResponse(pod_resources=list(self.pods))

    def start(self) -> FakeKubelet:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_PodResourcesListerServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix://{self.socket_path}")
        self._server.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.stop(0).wait(2)
            self._server = None
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
