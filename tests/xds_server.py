"""A proxyless gRPC xDS server (`grpc.server(..., xds=True)`): it takes its listener, TLS
and RBAC from the server listener istiod sends, and answers `/echo.Echo/Call` and
`/echo.Echo/Admin` with its name. Runs until its stdin closes.

Usage: xds_server.py ADDRESS NAME (GRPC_XDS_BOOTSTRAP in the environment)."""

import json
import sys
from concurrent import futures

import grpc


def main() -> None:
    address, name = sys.argv[1], sys.argv[2]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), xds=True)

    def answer(request, context):
        return name.encode()

    handler = grpc.method_handlers_generic_handler(
        "echo.Echo",
        {m: grpc.unary_unary_rpc_method_handler(answer) for m in ("Call", "Admin")},
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_secure_port(address, grpc.xds_server_credentials(grpc.insecure_server_credentials()))
    server.start()
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
