"""A state-of-the-world ADS client for the live tests: one stream that subscribes to types,
ACKs every response and keeps the latest resources of each type, decoded with the field
subset in tests/kube/xds_resources.proto."""

from __future__ import annotations

import json
import pathlib
import queue
import sys
import tempfile
import threading

import grpc
from google.protobuf import struct_pb2

from ca_support import generated

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

_RESOURCES = None


def resources_pb2():
    """Compiles tests/kube/xds_resources.proto once."""
    global _RESOURCES
    if _RESOURCES is None:
        from grpc_tools import protoc

        here = pathlib.Path(__file__).resolve().parent / "kube"
        out = tempfile.mkdtemp(prefix="xds-resources-")
        rc = protoc.main(["protoc", f"-I{here}", f"--python_out={out}", str(here / "xds_resources.proto")])
        assert rc == 0, "protoc failed for xds_resources.proto"
        sys.path.insert(0, out)
        import xds_resources_pb2

        _RESOURCES = xds_resources_pb2
    return _RESOURCES


class AdsStream:
    """One ADS stream on the plaintext port as a sidecar `node_id`; `latest[type_url]` holds
    the last response's raw resources (`google.protobuf.Any`)."""

    def __init__(self, port: int, node_id: str, metadata: dict | None = None):
        gen = generated()
        self._ads = gen["ads"]
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = gen["ads_grpc"].AggregatedDiscoveryServiceStub(self.channel)
        meta = struct_pb2.Struct()
        meta.update(metadata or {})
        self._node = self._ads.Node(id=node_id, metadata=meta)
        self._requests: queue.Queue = queue.Queue()
        self._names: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.latest: dict[str, list] = {}
        self.responses = 0
        self.error: Exception | None = None
        self._call = stub.StreamAggregatedResources(iter(self._requests.get, None))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def subscribe(self, type_url: str, names: list[str] | None = None):
        """Asks for `type_url` (wildcard when `names` is None)."""
        with self._lock:
            self._names[type_url] = list(names or [])
        self._requests.put(self._ads.DiscoveryRequest(node=self._node, type_url=type_url,
                                                      resource_names=names or []))

    def _read(self):
        try:
            for resp in self._call:
                with self._lock:
                    self.latest[resp.type_url] = list(resp.resources)
                    self.responses += 1
                    names = self._names.get(resp.type_url, [])
                self._requests.put(self._ads.DiscoveryRequest(
                    node=self._node, type_url=resp.type_url, version_info=resp.version_info,
                    response_nonce=resp.nonce, resource_names=names))
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                self.error = e

    def resources(self, type_url: str) -> list:
        if self.error is not None:
            raise AssertionError(f"ADS stream failed: {self.error}")
        with self._lock:
            return list(self.latest.get(type_url, []))

    def cluster_names(self) -> set[str]:
        pb = resources_pb2()
        return {pb.Cluster.FromString(a.value).name for a in self.resources(CDS)}

    def endpoints(self, cluster: str) -> list[dict]:
        """Every endpoint of `cluster` in the last EDS response: address, port, locality."""
        pb = resources_pb2()
        out = []
        for a in self.resources(EDS):
            cla = pb.ClusterLoadAssignment.FromString(a.value)
            if cla.cluster_name != cluster:
                continue
            for group in cla.endpoints:
                loc = group.locality
                for lb in group.lb_endpoints:
                    sa = lb.endpoint.address.socket_address
                    out.append({"address": sa.address, "port": sa.port_value,
                                "locality": f"{loc.region}/{loc.zone}/{loc.sub_zone}"})
        return sorted(out, key=json.dumps)

    def raw(self, type_url: str) -> bytes:
        """Every resource of a type, concatenated: for presence checks of names inside them."""
        return b"".join(a.value for a in self.resources(type_url))

    def close(self):
        self._requests.put(None)
        self._call.cancel()
        self.channel.close()
        self._reader.join(timeout=5)
