"""gRPC over a hand-driven HTTP/2 connection (the `h2` library), for clients no well-behaved
library would be: streams that never read (tiny flow-control windows, never updated), streams
reset the moment they are opened, and requests of any size or shape."""

from __future__ import annotations

import socket
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

SOTW_PATH = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message, uncompressed."""
    return struct.pack(">BI", 0, len(message)) + message


class RawConnection:
    """One HTTP/2 connection to 127.0.0.1:`port`. `window` is the flow-control window each
    stream offers the server; data is acknowledged (the window reopened) only by `read`."""

    def __init__(self, port: int, window: int = 65535):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.conn.initiate_connection()
        self._flush()
        self.data: dict[int, bytearray] = {}
        self.ended: dict[int, dict] = {}
        self.reset: set[int] = set()
        self.closed = False

    def _flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def open(self, message: bytes, path: str = SOTW_PATH) -> int:
        """Opens a gRPC stream and sends `message` on it, leaving the stream open."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [
            (":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "istiod"), ("content-type", "application/grpc"), ("te", "trailers"),
        ])
        self._flush()
        self.send(sid, message)
        return sid

    def send(self, sid: int, message: bytes):
        """Sends a message on an open stream, in pieces the server's windows allow."""
        frame = grpc_frame(message)
        while frame:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                self.read(0.2)
                continue
            self.conn.send_data(sid, frame[:room])
            frame = frame[room:]
            self._flush()

    def cancel(self, sid: int):
        """Resets a stream (what a client does when it gives up)."""
        self.conn.reset_stream(sid)
        self._flush()

    def read(self, seconds: float, acknowledge: bool = True):
        """Processes what the server sent for up to `seconds`; acknowledges data (reopening
        windows) unless `acknowledge` is false."""
        deadline = time.monotonic() + seconds
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return
            except OSError:
                self.closed = True
                return
            if not chunk:
                self.closed = True
                return
            for event in self.conn.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived):
                    self.data.setdefault(event.stream_id, bytearray()).extend(event.data)
                    if acknowledge:
                        self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                            event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    self.ended[event.stream_id] = dict(event.headers)
                elif isinstance(event, h2.events.ResponseReceived):
                    headers = dict(event.headers)
                    if "grpc-status" in headers:  # trailers-only response
                        self.ended[event.stream_id] = headers
                elif isinstance(event, h2.events.StreamReset):
                    self.reset.add(event.stream_id)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.closed = True
            self._flush()

    def messages(self, sid: int) -> list[bytes]:
        """The complete gRPC messages received on a stream so far."""
        buf, out = bytes(self.data.get(sid, b"")), []
        while len(buf) >= 5:
            (length,) = struct.unpack(">I", buf[1:5])
            if len(buf) < 5 + length:
                break
            out.append(buf[5:5 + length])
            buf = buf[5 + length:]
        return out

    def remote_setting(self, code) -> int | None:
        return self.conn.remote_settings.get(code)

    def close(self):
        try:
            self.conn.close_connection()
            self._flush()
        except Exception:  # noqa: BLE001 - the server may have closed it already
            pass
        self.sock.close()
