"""Reaching a guest through a proxy that terminates TLS (``tls:host:port#name``), as a cloud
provider's edge does, with a test CA."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gentity.guest import client
from gentity.guest.client import GuestEndpoint, GuestError

from .conftest import GuestFactory

pytestmark = pytest.mark.anyio

SERVER_NAME = "guest.test"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca_and_server(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) files; the server is SERVER_NAME."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("gentity test CA"))
        .issuer_name(_name("gentity test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(SERVER_NAME))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@contextlib.asynccontextmanager
async def tls_edge(cert: Path, key: Path, guest_socket: str) -> AsyncIterator[int]:
    """A TLS-terminating proxy in front of the guest's unix socket; yields its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_unix_connection(guest_socket)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(forward, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_tls_through_an_edge_with_a_test_ca(
    guest_factory: GuestFactory, tmp_path: Path
) -> None:
    ca, cert, key = make_ca_and_server(tmp_path)
    guest = guest_factory(command=["sh", "-c", "echo over-tls; exec sleep 600"])
    async with tls_edge(cert, key, guest.sock_path) as port:
        trusted = ssl.create_default_context(cafile=str(ca))
        endpoint = GuestEndpoint(f"tls:127.0.0.1:{port}#{SERVER_NAME}", trusted)
        info = await client.health(endpoint, guest.secret)
        assert info["pid"] == guest.proc.pid
        await guest.wait_for(lambda h: h["agent"]["state"] == "ready")
        records, _ = await client.logs(endpoint, guest.secret, lines=20)
        assert "over-tls" in [r["message"] for r in records]

        # Without the test CA (the system's CAs), or for another name, there is no session.
        with pytest.raises(GuestError, match="TLS to the guest"):
            await client.health(f"tls:127.0.0.1:{port}#{SERVER_NAME}", guest.secret)
        with pytest.raises(GuestError, match="TLS to the guest"):
            await client.health(GuestEndpoint(f"tls:127.0.0.1:{port}", trusted), guest.secret)
