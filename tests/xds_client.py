"""A proxyless gRPC client driven over stdin: `call N` makes N unary calls through the
xDS resolver and prints how many each backend answered, as JSON.

Runs in its own process because grpcio reads GRPC_XDS_BOOTSTRAP from the environment."""

import collections
import json
import sys

import grpc


def main() -> None:
    target = sys.argv[1]
    channel = grpc.insecure_channel(target)
    call = channel.unary_unary("/echo.Echo/Call")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        n = int(words[1])
        counts = collections.Counter()
        for _ in range(n):
            try:
                counts[call(b"ping", timeout=5).decode()] += 1
            except grpc.RpcError as e:
                counts[f"error:{e.code().name}"] += 1
        print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
