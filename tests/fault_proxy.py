"""An HTTP proxy for tests that loses the answers of some Keystone POSTs.

The programs under test reach it through the standard `HTTP_PROXY` variable (the
requests library under keystoneauth honours it; gRPC reads only the lower-case
names, so the engine's own local connections are unaffected). Every request is
forwarded to Keystone for real; for every `drop_every`-th POST that creates a
record, the proxy waits for Keystone's answer (the record now exists) and then
resets the client's connection instead of passing the answer on: what a load
balancer timing out, or a connection lost at the wrong moment, does.
"""
from __future__ import annotations

import re
import socket
import struct
import threading
from urllib.parse import urlsplit

CREATES = re.compile(r"^/v3/(regions|services|endpoints|users|projects|domains)/?$")


def _read_request(conn: socket.socket) -> tuple[bytes, bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


class FaultProxy:
    def __init__(self, address: str, drop_every: int = 3):
        self.drop_every = drop_every
        self.creates = 0
        self.dropped: list[str] = []  # "POST /v3/endpoints", ...
        self.forwarded = 0
        self._lock = threading.Lock()
        self._server = socket.create_server((address, 0))
        self.url = f"http://{address}:{self._server.getsockname()[1]}"
        self._stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def stop(self) -> None:
        self._stopped = True
        self._server.close()

    def _serve(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            request = _read_request(conn)
            if request is None:
                return
            head, body = request
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            url = urlsplit(target)
            path = url.path + (f"?{url.query}" if url.query else "")
            headers = [h for h in lines[1:] if h.split(":", 1)[0].strip().lower()
                       not in ("connection", "proxy-connection", "keep-alive")]
            upstream_head = "\r\n".join([f"{method} {path} {version}", *headers, "Connection: close"]) + "\r\n\r\n"
            with socket.create_connection((url.hostname, url.port or 80), timeout=120) as upstream:
                upstream.sendall(upstream_head.encode("latin-1") + body)
                answer = b""
                while True:
                    chunk = upstream.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
            drop = False
            if method == "POST" and CREATES.match(url.path):
                with self._lock:
                    self.creates += 1
                    drop = self.creates % self.drop_every == 0
                    if drop:
                        self.dropped.append(f"{method} {url.path}")
            if drop:  # Keystone did the work; the client never hears of it
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            with self._lock:
                self.forwarded += 1
            conn.sendall(answer)
