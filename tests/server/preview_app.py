"""A web app to run inside an instance (standard library only): shows the headers it got,
sets cookies, hashes uploads, and echoes WebSocket messages. Run: ``python3 app.py PORT``."""

import base64
import hashlib
import json
import struct
import sys
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
COOKIES = ("wide=1; Domain=localhost; Path=/", "gentity_session=planted; Path=/", "own=2; Path=/")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, body: Any, extra: Iterable[tuple[str, str]] = ()) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def seen(self) -> dict[str, Any]:
        return {"path": self.path, "headers": [[k.lower(), v] for k, v in self.headers.items()]}

    def do_GET(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.websocket()
            return
        if self.path == "/cookie":
            self.answer({}, [("Set-Cookie", c) for c in COOKIES])
            return
        self.answer(self.seen())

    def do_POST(self) -> None:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "")
        length = int(self.headers.get("Content-Length", 0))
        data = self.read_chunks() if chunked else self.rfile.read(length)
        digest = hashlib.sha256(data).hexdigest()
        self.answer({"length": len(data), "sha256": digest, "chunked": chunked})

    def read_chunks(self) -> bytes:
        parts = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()  # the blank line after the last chunk
        return b"".join(parts)

    def websocket(self) -> None:
        key = self.headers["Sec-WebSocket-Key"].encode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            op, size = head[0] & 15, head[1] & 127
            if size == 126:
                size = struct.unpack(">H", self.rfile.read(2))[0]
            elif size == 127:
                size = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(size)))
            if op == 8:
                self.wfile.write(b"\x88\x02\x03\xe8")
                return
            out = json.dumps(self.seen()).encode() if data == b"headers" else b"echo:" + data
            if len(out) < 126:
                length = bytes([len(out)])
            elif len(out) < 65536:
                length = b"\x7e" + struct.pack(">H", len(out))
            else:
                length = b"\x7f" + struct.pack(">Q", len(out))
            self.wfile.write(bytes([0x80 | op]) + length + out)
            self.wfile.flush()

    def log_message(self, *args: Any) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
