"""Decodes ADS responses with the `xds-protos` package alone: Envoy's own .proto files
compiled for Python, a protobuf implementation other than the prost types istiod encodes
with. Every resource and every `Any` nested in it is unpacked by its type URL, and a field
the schema does not know fails the run.

Runs in its own process so that no other copy of the Envoy messages (the tests compile
small subsets of their own) shares its descriptor pool.

Usage: xds_protos_decode.py FILE, where FILE holds DiscoveryResponses, each preceded by its
length (4 bytes, big endian). Prints {"responses": [...as JSON...], "types": {name: count}}."""

import json
import struct
import sys
from collections import Counter

from google.protobuf import descriptor_pool, json_format, message_factory, unknown_fields

# Registers every type istiod sends (to gRPC peers and Envoy sidecars), so that `Any` can
# be resolved.
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.filters.http.cors.v3 import cors_pb2  # noqa: F401
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2  # noqa: F401
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.ext_authz.v3 import ext_authz_pb2 as network_ext_authz_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2  # noqa: F401
from envoy.extensions.path.rewrite.uri_template.v3 import uri_template_rewrite_pb2  # noqa: F401
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.service.discovery.v3 import discovery_pb2


def unpack(any_msg):
    """The message inside an `Any`, by the type xds-protos knows for its URL."""
    name = any_msg.type_url.rsplit("/", 1)[-1]
    cls = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(name))
    msg = cls()
    if not any_msg.Unpack(msg):
        raise ValueError(f"cannot unpack {any_msg.type_url}")
    return msg


def walk(msg, seen: Counter, path: str):
    """Decodes every nested `Any`; fails on a field the schema does not know."""
    unknown = unknown_fields.UnknownFieldSet(msg)
    if len(unknown):
        raise ValueError(f"{path}: {len(unknown)} unknown fields in {msg.DESCRIPTOR.full_name}")
    seen[msg.DESCRIPTOR.full_name] += 1
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            items = list(value.values()) if value_field.message_type else []
        elif field.is_repeated:
            items = list(value)
        else:
            items = [value]
        for item in items:
            if item.DESCRIPTOR.full_name == "google.protobuf.Any":
                item = unpack(item)
            walk(item, seen, f"{path}.{field.name}")


def main() -> None:
    data = open(sys.argv[1], "rb").read()
    seen = Counter()
    responses = []
    offset = 0
    while offset < len(data):
        (size,) = struct.unpack_from(">I", data, offset)
        raw = data[offset + 4:offset + 4 + size]
        offset += 4 + size
        response = discovery_pb2.DiscoveryResponse.FromString(raw)
        walk(response, seen, f"response[{len(responses)}]")
        responses.append(json_format.MessageToDict(response, preserving_proto_field_name=True))
    json.dump({"responses": responses, "types": seen}, sys.stdout)


if __name__ == "__main__":
    main()
