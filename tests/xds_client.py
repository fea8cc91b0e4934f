"""A proxyless gRPC client driven over stdin: `call N [METHOD]` makes N unary calls
(`/echo.Echo/Call` unless METHOD names another method of `echo.Echo`) through the xDS
resolver and prints how many each backend answered, and the status of the failures, as
JSON.

With `--xds-creds` the channel takes its security from xDS (`grpc.xds_channel_credentials` over the experimental insecure fallback,
plaintext when the cluster has no TLS); without it the channel is plaintext.

Runs in its own process because grpcio reads GRPC_XDS_BOOTSTRAP from the environment."""

import argparse
import collections
import json
import sys

import grpc
import grpc.experimental


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("--xds-creds", action="store_true")
    args = parser.parse_args()
    if args.xds_creds:
        creds = grpc.xds_channel_credentials(fallback_credentials=grpc.experimental.insecure_channel_credentials())
        channel = grpc.secure_channel(args.target, creds)
    else:
        channel = grpc.insecure_channel(args.target)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        n = int(words[1])
        method = words[2] if len(words) > 2 else "Call"
        call = channel.unary_unary(f"/echo.Echo/{method}")
        counts = collections.Counter()
        for _ in range(n):
            try:
                counts[call(b"ping", timeout=5).decode()] += 1
            except grpc.RpcError as e:
                counts[f"error:{e.code().name}"] += 1
        print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
