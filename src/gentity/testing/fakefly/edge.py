"""The edge: a TLS listener standing in for ``<app>.fly.dev:443``.

Fly's proxy terminates TLS for a service port with ``handlers: ["tls"]`` and forwards the raw
TCP stream to the app's machine on the service's ``internal_port``. The fake does the same on
one local port for every app, telling apps apart by SNI, with a ``*.fly.dev`` certificate signed
by a CA it creates at start-up (clients trust it through ``--ca-file``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DOMAIN = "fly.dev"
CHUNK = 65536

Route = Callable[[str], int | None]
"""Maps an app name to the host port its started machine's service is forwarded to."""


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(ca_file: Path, directory: Path) -> tuple[Path, Path]:
    """Write a new CA to ``ca_file`` and a ``*.fly.dev`` certificate and key it signed into
    ``directory``; returns (certificate, key) paths for the listener."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fakefly test CA"))
        .issuer_name(_name("fakefly test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"*.{DOMAIN}"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(f"*.{DOMAIN}"), x509.DNSName(DOMAIN)]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file.parent.mkdir(parents=True, exist_ok=True)
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path, key_path = directory / "edge.crt", directory / "edge.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


class Edge:
    """The TLS listener; :meth:`start` binds it, :meth:`close` stops it and its connections."""

    def __init__(self, ca_file: Path, route: Route) -> None:
        self.ca_file = ca_file
        self.route = route
        self.port = 0
        self._server: asyncio.Server | None = None
        self._names: dict[int, str] = {}
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        with tempfile.TemporaryDirectory(prefix="fakefly-edge-") as directory:
            cert, key = make_certificates(self.ca_file, Path(directory))
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
        context.sni_callback = self._remember_name
        self._server = await asyncio.start_server(self._serve, host, port, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]

    def _remember_name(
        self, connection: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext
    ) -> None:
        if name is not None:
            self._names[id(connection)] = name

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            connection = writer.get_extra_info("ssl_object")
            name = self._names.pop(id(connection), "")
            app = name[: -len(DOMAIN) - 1] if name.endswith("." + DOMAIN) else ""
            port = self.route(app) if app else None
            if port is None:
                return  # no such app, or no started machine: Fly's proxy drops it too
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return
            # The client may half-close (TCP to the machine can carry that on); when the
            # machine's side ends, so does the connection, since TLS cannot half-close.
            to_machine = asyncio.create_task(_pipe(reader, upstream_writer))
            try:
                await _pipe(upstream_reader, writer)
            finally:
                to_machine.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await to_machine
                upstream_writer.close()
        finally:
            self._connections.discard(task)
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()
