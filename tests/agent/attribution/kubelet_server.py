"""A real gRPC server implementing the kubelet pod-resources v1 API on a unix socket, for tests."""

from __future__ import annotations

import importlib
import os
import threading
from concurrent import futures
from typing import Any

import grpc

from agent.attribution.kubelet import PODRESOURCES_LIST, PODRESOURCES_SERVICE

# the generated message module: its classes are built at import time, which type checkers cannot see
pb: Any = importlib.import_module("agent.attribution.podresources_pb2")


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


class FakeKubelet:
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
        handler = grpc.unary_unary_rpc_method_handler(
            self.List,
            request_deserializer=pb.ListPodResourcesRequest.FromString,
            response_serializer=pb.ListPodResourcesResponse.SerializeToString,
        )
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(PODRESOURCES_SERVICE, {PODRESOURCES_LIST: handler}),)
        )
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
