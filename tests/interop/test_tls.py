"""TLS (STARTTLS) with real clients: libnbd (bindings, nbdinfo, nbdcopy) and qemu-img.

The certificates come from :mod:`certs` (one directory with nbdkit's server files and libnbd's
client files); the server's context is built by :func:`trioblock._tls.load_tls_context`, the
same function the command line uses for ``--tls-certificates``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nbd
import pytest
import trio
import trio.testing
from certs import PKI, make_pki

from conftest import ServeFactory
from realpeers import need, run
from trioblock import NBDServer
from trioblock._plugins._memory import MemoryPlugin
from trioblock._tls import load_tls_context

pytestmark = pytest.mark.interop

MiB = 1024 * 1024
SIZE = 16 * MiB


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("tls"))


def memory() -> MemoryPlugin:
    return MemoryPlugin.from_params([("size", "16M")])


async def serve_tls(
    serve: ServeFactory, pki: PKI, *, tls: str = "require", verify_peer: bool = False, tcp: bool
) -> NBDServer:
    context = load_tls_context(str(pki.full), verify_peer)
    return await serve(memory(), tcp=tcp, tls=tls, ssl_context=context)


def tls_uri(server: NBDServer, certificates: Path) -> str:
    """An ``nbds`` URI (whatever ``server.uri()`` says) naming the client's certificates."""
    plain = server.uri()
    scheme, rest = plain.split(":", 1)
    if not scheme.startswith("nbds"):
        scheme = scheme.replace("nbd", "nbds", 1)
    separator = "&" if "?" in rest else "?"
    return f"{scheme}:{rest}{separator}tls-certificates={quote(str(certificates), safe='/')}"


def plain_uri(server: NBDServer) -> str:
    return server.uri().replace("nbds", "nbd", 1)


async def fails(args: list[str]) -> str:
    """Run a client that must fail; return its stderr."""
    need(args[0])
    with trio.fail_after(60):
        result = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode != 0, result.stdout
    return result.stderr.decode(errors="replace")


def tls_client(uri: str, certificates: Path, *, mode: int = nbd.TLS_REQUIRE) -> Any:
    """A libnbd handle with TLS set up and connected (blocking: call in a thread)."""
    h = nbd.NBD()
    h.set_tls(mode)
    h.set_tls_certificates(str(certificates))
    h.add_meta_context("base:allocation")
    h.connect_uri(uri)
    return h


# -- tls=require -----------------------------------------------------------------------------------


async def test_nbdinfo_over_tls_reports_tls_and_the_export(serve: ServeFactory, pki: PKI) -> None:
    server = await serve_tls(serve, pki, tcp=False)
    assert server.uri().startswith("nbds+unix://")
    info = json.loads(await run(["nbdinfo", "--json", tls_uri(server, pki.full)]))
    assert info["TLS"] is True
    assert info["structured"] is True
    (export,) = info["exports"]
    assert export["export-size"] == SIZE
    assert export["contexts"] == ["base:allocation"]
    listed = await run(["nbdinfo", "--list", tls_uri(server, pki.full)])
    assert 'export="":' in listed


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
async def test_libnbd_round_trips_data_over_tls(serve: ServeFactory, pki: PKI, tcp: bool) -> None:
    server = await serve_tls(serve, pki, tcp=tcp)
    data = os.urandom(3 * MiB)

    def client() -> tuple[bool, bytes, list[int]]:
        h = nbd.NBD()
        h.set_tls(nbd.TLS_REQUIRE)
        h.set_tls_certificates(str(pki.full))
        h.add_meta_context("base:allocation")
        h.connect_uri(server.uri())  # nbds:// already: libnbd needs TLS anyway
        negotiated: bool = h.get_tls_negotiated()
        h.pwrite(data, MiB, nbd.CMD_FLAG_FUA)
        h.zero(64 * 1024, MiB)
        h.flush()
        entries: list[int] = []
        h.block_status(SIZE, 0, lambda ctx, offset, e, err: entries.extend(e))
        back: bytes = h.pread(len(data), MiB)
        h.shutdown()
        return negotiated, back, entries

    negotiated, back, entries = await trio.to_thread.run_sync(client)
    assert negotiated
    assert back == bytes(64 * 1024) + data[64 * 1024 :]
    assert entries == [MiB + 64 * 1024, 3, 3 * MiB - 64 * 1024, 0, SIZE - 4 * MiB, 3]


async def test_many_requests_in_flight_over_tls(serve: ServeFactory, pki: PKI) -> None:
    server = await serve_tls(serve, pki, tcp=True)

    def client() -> list[bytes]:
        h = tls_client(server.uri(), pki.full)
        for i in range(64):
            h.aio_pwrite(nbd.Buffer.from_bytearray(bytes([i]) * 65536), i * 65536)
        while h.aio_in_flight() > 0:
            h.poll(-1)
        buffers = [nbd.Buffer(65536) for _ in range(64)]
        for i, buf in enumerate(buffers):
            h.aio_pread(buf, i * 65536)
        while h.aio_in_flight() > 0:
            h.poll(-1)
        h.shutdown()
        return [bytes(buf.to_bytearray()) for buf in buffers]

    assert await trio.to_thread.run_sync(client) == [bytes([i]) * 65536 for i in range(64)]


async def test_nbdcopy_round_trips_over_tls(serve: ServeFactory, pki: PKI, tmp_path: Path) -> None:
    server = await serve_tls(serve, pki, tcp=True)
    image, out = tmp_path / "in.img", tmp_path / "out.img"
    image.write_bytes(os.urandom(4 * MiB) + bytes(4 * MiB) + os.urandom(8 * MiB))
    uri = tls_uri(server, pki.full)
    await run(["nbdcopy", str(image), uri])
    await run(["nbdcopy", "--request-size=4096", uri, str(out)])
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest


async def test_qemu_img_reads_over_tls_with_x509_credentials(serve: ServeFactory, pki: PKI) -> None:
    server = await serve_tls(serve, pki, tcp=True)
    creds = f"tls-creds-x509,id=tls0,endpoint=client,dir={pki.full}"
    options = f"driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={server.port}"
    out = await run(
        ["qemu-img", "info", "--object", creds, "--image-opts", f"{options},tls-creds=tls0"]
    )
    assert "virtual size: 16 MiB (16777216 bytes)" in out


async def test_plain_client_is_refused_and_server_keeps_serving_tls(
    serve: ServeFactory, pki: PKI
) -> None:
    server = await serve_tls(serve, pki, tcp=False)
    # The server answers NBD_REP_ERR_TLS_REQD, which libnbd reports as an error to opt_go (the
    # same message as against nbdkit --tls=require).
    stderr = await fails(["nbdinfo", plain_uri(server)])
    assert "server replied with error to opt_go request" in stderr

    def plain_libnbd() -> None:
        h = nbd.NBD()
        h.set_tls(nbd.TLS_DISABLE)
        with pytest.raises(nbd.Error):
            h.connect_uri(plain_uri(server))

    await trio.to_thread.run_sync(plain_libnbd)
    out = await run(["nbdinfo", "--size", tls_uri(server, pki.full)])
    assert out.strip() == str(SIZE)


async def test_plain_client_in_opt_mode_cannot_list_exports(serve: ServeFactory, pki: PKI) -> None:
    server = await serve_tls(serve, pki, tcp=False)

    def client() -> None:
        h = nbd.NBD()
        h.set_tls(nbd.TLS_DISABLE)
        h.set_opt_mode(True)
        h.connect_uri(plain_uri(server))
        with pytest.raises(nbd.Error):
            h.opt_list(lambda name, description: 0)
        with pytest.raises(nbd.Error):
            h.opt_info()
        h.opt_abort()

    await trio.to_thread.run_sync(client)


# -- tls=on ----------------------------------------------------------------------------------------


async def test_tls_on_serves_plain_and_tls_clients(serve: ServeFactory, pki: PKI) -> None:
    server = await serve_tls(serve, pki, tls="on", tcp=True)
    assert server.uri().startswith("nbd://")
    plain = json.loads(await run(["nbdinfo", "--json", server.uri()]))
    assert plain["TLS"] is False
    secure = json.loads(await run(["nbdinfo", "--json", tls_uri(server, pki.full)]))
    assert secure["TLS"] is True

    def client(mode: int) -> tuple[bool, bytes]:
        h = tls_client(server.uri(), pki.full, mode=mode)
        h.pwrite(b"tls-on", 0)
        result = (h.get_tls_negotiated(), h.pread(6, 0))
        h.shutdown()
        return result

    assert await trio.to_thread.run_sync(client, nbd.TLS_ALLOW) == (True, b"tls-on")
    assert await trio.to_thread.run_sync(client, nbd.TLS_DISABLE) == (False, b"tls-on")


# -- certificates --------------------------------------------------------------------------------


async def test_verify_peer_accepts_a_client_certificate_from_the_ca(
    serve: ServeFactory, pki: PKI
) -> None:
    server = await serve_tls(serve, pki, verify_peer=True, tcp=True)
    out = await run(["nbdinfo", "--size", tls_uri(server, pki.full)])
    assert out.strip() == str(SIZE)


async def test_verify_peer_refuses_a_client_without_certificate(
    serve: ServeFactory, pki: PKI
) -> None:
    server = await serve_tls(serve, pki, verify_peer=True, tcp=False)
    await fails(["nbdinfo", "--size", tls_uri(server, pki.ca_only)])
    # The refused handshake did not disturb the server.
    out = await run(["nbdinfo", "--size", tls_uri(server, pki.full)])
    assert out.strip() == str(SIZE)


async def test_client_refuses_a_server_from_an_unknown_ca(serve: ServeFactory, pki: PKI) -> None:
    server = await serve_tls(serve, pki, tcp=True)
    stderr = await fails(["nbdinfo", "--size", tls_uri(server, pki.other_ca)])
    assert "certificate" in stderr.lower()
    out = await run(["nbdinfo", "--size", tls_uri(server, pki.full)])
    assert out.strip() == str(SIZE)


async def test_tls_client_vanishing_is_not_logged_as_an_error(
    serve: ServeFactory, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve_tls(serve, pki, tcp=False)

    def vanish() -> None:
        h = tls_client(server.uri(), pki.full)
        h.pread(512, 0)
        del h  # no NBD_CMD_DISC, no TLS close_notify: the socket just closes

    with caplog.at_level(logging.DEBUG, logger="trioblock"):
        await trio.to_thread.run_sync(vanish)
        await trio.testing.wait_all_tasks_blocked()
    assert not server.connections
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
