"""TLS over real TCP on 127.0.0.1 (SPEC.md §2.1, §12): a throwaway CA from ``trustme``, the
server's ``ServerConfig.tls``, the reference client's ``tls=``, and the terminal commands.

The server under test always speaks TLS only; a client that does not trust it, or speaks
plaintext to it, must fail quickly and clearly while the server goes on serving others. The
reference client's tests run under asyncio and trio (the server then runs in a thread).
"""

from __future__ import annotations

import gc
import logging
import ssl
import subprocess
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
import trio
import trustme
from integration.cli_support import PUSHWIRE, serve
from integration.server_peer import CLIENT_PREFACE, RawPeer, hello
from server_thread import ServerLoop

import pushwire.client as pw
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import PREFACE_SIZE
from pushwire.server import Permissions, ServerConfig, open_server, server_tls_context

TIMEOUT = 10
#: Short, so the timeout tests are quick, and still far above a loopback TLS handshake.
HANDSHAKE_TIMEOUT = 0.5


@dataclass(frozen=True)
class Pki:
    """PEM files of a throwaway CA and of a server certificate it signed."""

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        return server_tls_context(self.cert, self.key)

    def client_context(self) -> ssl.SSLContext:
        context = pw.tls_context(True, ca_file=self.ca)
        assert context is not None
        return context


def make_pki(directory: Path, *names: str) -> Pki:
    ca = trustme.CA()
    leaf = ca.issue_cert(*names)
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca.cert_pem.write_to_path(str(pki.ca))
    leaf.private_key_pem.write_to_path(str(pki.key))
    for i, pem in enumerate(leaf.cert_chain_pems):  # leaf first
        pem.write_to_path(str(pki.cert), append=i > 0)
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "localhost", "127.0.0.1")


@asynccontextmanager
async def tls_server(pki: Pki, **overrides: Any) -> AsyncIterator[str]:
    """A TLS-only server on an ephemeral port; yields ``127.0.0.1:PORT``."""
    config = ServerConfig(port=0, tls=pki.server_context(), handshake_timeout=HANDSHAKE_TIMEOUT)
    async with open_server(config, **overrides) as server:
        yield f"127.0.0.1:{server.port}"


@asynccontextmanager
async def tls_server_thread(loop: ServerLoop, pki: Pki, **overrides: Any) -> AsyncIterator[str]:
    """:func:`tls_server` in the server thread of ``loop``, for a client under any backend."""
    config = ServerConfig(port=0, tls=pki.server_context(), handshake_timeout=HANDSHAKE_TIMEOUT)
    async with loop.server(config, **overrides) as server:
        yield f"127.0.0.1:{server.port}"


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


async def tls_stream(
    address: str, context: ssl.SSLContext, name: str
) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port_of(address))
    return trio.SSLStream(tcp, context, server_hostname=name, https_compatible=False)


async def read_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:  # a reset is a close as well
        pass
    return data


async def receive_until_eof(stream: anyio.abc.ByteReceiveStream) -> bytes:
    """:func:`read_until_eof` for an anyio stream."""
    data = b""
    try:
        while True:
            data += await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError):  # a reset is a close as well
        return data


async def wait_for_log(caplog: pytest.LogCaptureFixture, match: Callable[[str], bool]) -> str:
    """The first ``pushwire.server`` message that matches (the server logs a close after
    the close itself, so a test may get there first); bounded by the caller's fail_after."""
    while True:
        for record in caplog.records:
            if record.name == "pushwire.server" and match(record.getMessage()):
                return record.getMessage()
        await anyio.sleep(0.01)


# -- the reference client over TLS ----------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.spec("PW-TRANSPORT-1")
async def test_subscribe_and_publish_round_trip_over_tls(pki: Pki, server_loop: ServerLoop) -> None:
    with anyio.fail_after(TIMEOUT):
        everything = Permissions(subscribe=("#",), publish=("#",))
        async with tls_server_thread(server_loop, pki, auth={b"tok": everything}) as address:
            tls = pki.client_context()
            async with (
                pw.connect(address, tls=tls, auth_token=b"tok") as subscriber,
                pw.connect(address, tls=tls, auth_token=b"tok") as publisher,
            ):
                sub = subscriber.subscribe("news/eu", since="oldest")
                first = await publisher.publish("news/eu", b"hello", headers={"k": b"v"})
                await publisher.publish_batch("news/eu", [b"a", b"b"])
                got = [await sub.__anext__() for _ in range(3)]
                await sub.aclose()
    assert [(m.seq, m.payload) for m in got] == [(first, b"hello"), (2, b"a"), (3, b"b")]
    assert got[0].headers == (("k", b"v"),)


@pytest.mark.spec("PW-TRANSPORT-3", "PW-TRANSPORT-1", "PW-TRANSPORT-6")
async def test_tls_wraps_the_stream_from_the_first_preface_byte(pki: Pki) -> None:
    """Inside TLS the very first bytes each way are the prefaces; TLS 1.3 is negotiated."""
    with trio.fail_after(TIMEOUT):
        async with tls_server(pki) as address:
            stream = await tls_stream(address, pki.client_context(), "localhost")
            peer = RawPeer(stream)
            welcome = await peer.handshake(client_name="raw-tls")
            assert isinstance(welcome, F.Welcome)
            assert stream.version() == "TLSv1.3"
            await peer.subscribe(1, "t")
            await peer.publish("t", b"inside tls", request_id=2)
            assert await peer.messages(1) == [(1, b"inside tls")]
            await peer.aclose()


async def test_a_closed_tls_connection_is_freed_without_the_cyclic_collector(pki: Pki) -> None:
    """trio's SSLStream is a reference cycle (its handshake is a bound method of itself),
    and each holds OpenSSL's memory; ``pushwire serve`` collects cycles rarely. The server
    breaks the cycle when a TLS connection ends, after a session or a failed handshake."""

    def server_streams() -> list[object]:
        return [o for o in gc.get_objects() if isinstance(o, trio.SSLStream) and o.server_side]

    config = ServerConfig(port=0, tls=pki.server_context(), handshake_timeout=HANDSHAKE_TIMEOUT)
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            address = f"127.0.0.1:{server.port}"
            gc.collect()
            gc.disable()
            try:
                for _ in range(3):
                    peer = RawPeer(await tls_stream(address, pki.client_context(), "localhost"))
                    await peer.handshake()
                    await peer.subscribe(1, "t")
                    assert len(server_streams()) == 1
                    await peer.aclose()
                    while server.sessions:
                        await trio.sleep(0.01)
                plain = await trio.open_tcp_stream("127.0.0.1", server.port)
                await plain.send_all(CLIENT_PREFACE + hello())  # no TLS: the handshake fails
                await read_until_eof(plain)
                await plain.aclose()
                await trio.sleep(0.05)  # the connection's task has returned
                left = server_streams()
            finally:
                gc.enable()
    assert left == []


@pytest.mark.anyio
@pytest.mark.spec("PW-TRANSPORT-4")
async def test_server_hostname_names_the_certificate_when_the_address_does_not(
    tmp_path: Path, server_loop: ServerLoop
) -> None:
    named = make_pki(tmp_path, "pushwire.test")  # no IP address in the certificate
    with anyio.fail_after(TIMEOUT):
        async with tls_server_thread(server_loop, named) as address:
            tls = named.client_context()
            with pytest.raises(pw.ConnectError, match="certificate verification failed"):
                async with pw.connect(address, tls=tls):
                    pass
            async with pw.connect(address, tls=tls, server_hostname="pushwire.test") as conn:
                assert await conn.publish("t", b"x") == 1
    with pytest.raises(ValueError, match="server_hostname needs tls"):
        async with pw.connect(address, server_hostname="pushwire.test"):
            pass


@pytest.mark.anyio
@pytest.mark.spec("PW-TRANSPORT-4")
async def test_a_client_that_does_not_trust_the_ca_fails_clearly_and_quickly(
    pki: Pki, caplog: pytest.LogCaptureFixture, server_loop: ServerLoop
) -> None:
    caplog.set_level(logging.INFO, logger="pushwire")
    with anyio.fail_after(TIMEOUT):
        async with tls_server_thread(server_loop, pki) as address:
            start = anyio.current_time()
            with pytest.raises(pw.ConnectError) as info:
                async with pw.connect(address, tls=True, connect_timeout=TIMEOUT):
                    pass  # the system trust store does not know the throwaway CA
            assert anyio.current_time() - start < HANDSHAKE_TIMEOUT  # refused, not timed out
            assert "TLS certificate verification failed" in str(info.value)
            line = await wait_for_log(caplog, lambda m: "TLS_FAILED" in m)
            async with pw.connect(address, tls=pki.client_context()) as conn:
                assert await conn.publish("t", b"still serving") == 1
    assert "TLS handshake failed" in line
    assert not any(r.exc_info for r in caplog.records)


# -- the wrong kind of client ---------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.spec("PW-TRANSPORT-3")
async def test_a_plaintext_client_fails_at_once_and_the_server_keeps_serving(
    pki: Pki, caplog: pytest.LogCaptureFixture, server_loop: ServerLoop
) -> None:
    caplog.set_level(logging.INFO, logger="pushwire")
    with anyio.fail_after(TIMEOUT):
        async with tls_server_thread(server_loop, pki) as address:
            # the reference client: a clean failure, not a hang
            start = anyio.current_time()
            with pytest.raises(pw.ConnectError, match="closed the connection"):
                async with pw.connect(address, connect_timeout=TIMEOUT):
                    pass
            assert anyio.current_time() - start < HANDSHAKE_TIMEOUT
            # a raw one: no pushwire preface ever comes back in clear
            async with await anyio.connect_tcp("127.0.0.1", port_of(address)) as raw:
                await raw.send(CLIENT_PREFACE + hello())
                answer = await receive_until_eof(raw)
            assert answer[:PREFACE_SIZE] != CLIENT_PREFACE[:PREFACE_SIZE]
            assert b"PW" not in answer
            await wait_for_log(caplog, lambda m: "TLS_FAILED" in m and "WRONG_VERSION" in m)
            async with pw.connect(address, tls=pki.client_context()) as conn:
                assert await conn.publish("t", b"still serving") == 1
    failures = [r for r in caplog.records if "TLS_FAILED" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.levelno == logging.INFO and not r.exc_info for r in failures)
    assert all(getattr(r, "code", None) == "TLS_FAILED" for r in failures)


async def test_a_client_that_never_starts_tls_loses_its_slot_at_the_handshake_timeout(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pushwire")
    with trio.fail_after(TIMEOUT):
        async with tls_server(pki, max_handshaking=1) as address:
            silent = await trio.open_tcp_stream("127.0.0.1", port_of(address))
            start = trio.current_time()
            # while the silent one holds the only handshake slot, a client is turned away ...
            with pytest.raises(pw.HandshakeRejected) as info:
                async with pw.connect(address, tls=pki.client_context()):
                    pass
            assert info.value.code == ErrorCode.TOO_MANY_CONNECTIONS
            # ... until the handshake timeout closes the silent one, with nothing sent
            assert await read_until_eof(silent) == b""
            elapsed = trio.current_time() - start
            await silent.aclose()
            line = await wait_for_log(caplog, lambda m: "HANDSHAKE_TIMEOUT" in m)
            async with pw.connect(address, tls=pki.client_context()) as conn:
                assert await conn.publish("t", b"served") == 1
    assert HANDSHAKE_TIMEOUT * 0.9 <= elapsed < HANDSHAKE_TIMEOUT + 2
    assert "no TLS handshake within 0.5 s" in line
    assert not any(r.exc_info for r in caplog.records)


@pytest.mark.spec("PW-HS-14")
async def test_the_hello_deadline_counts_from_the_tcp_accept_not_from_the_end_of_tls(
    pki: Pki,
) -> None:
    timeout = 1.0
    with trio.fail_after(TIMEOUT):
        async with tls_server(pki, handshake_timeout=timeout, close_timeout=0.1) as address:
            tcp = await trio.open_tcp_stream("127.0.0.1", port_of(address))
            accepted = trio.current_time()
            await trio.sleep(timeout * 0.9)  # a slow TLS handshake ...
            tls = trio.SSLStream(tcp, pki.client_context(), server_hostname="localhost")
            await tls.do_handshake()
            # ... then no preface at all: the server gives up one timeout after the accept
            assert await read_until_eof(tls) == b""
            elapsed = trio.current_time() - accepted
            await trio.aclose_forcefully(tls)
    # a deadline restarted after TLS would close at about 1.9 s
    assert timeout * 0.9 <= elapsed < timeout * 1.6


async def test_shutdown_does_not_wait_for_a_pending_tls_handshake(pki: Pki) -> None:
    config = ServerConfig(port=0, tls=pki.server_context(), handshake_timeout=60)
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            silent = await trio.open_tcp_stream("127.0.0.1", server.port)
            await trio.sleep(0.05)  # let the server start the handshake
            start = trio.current_time()
        assert trio.current_time() - start < 5
        assert await read_until_eof(silent) == b""
        await silent.aclose()


@pytest.mark.spec("PW-TRANSPORT-5")
async def test_the_server_refuses_tls_below_1_2(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pushwire")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(pki.ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1_1 is deprecated, sure
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with trio.fail_after(TIMEOUT):
        async with tls_server(pki) as address:
            stream = await tls_stream(address, old, "localhost")
            with pytest.raises(trio.BrokenResourceError):
                await stream.do_handshake()
            await trio.aclose_forcefully(stream)
            line = await wait_for_log(caplog, lambda m: "TLS_FAILED" in m)
    if "UNSUPPORTED_PROTOCOL" not in line:  # the client could not even offer TLS 1.1
        pytest.skip(f"inconclusive, this OpenSSL refused to offer TLS 1.1: {line}")
    # and a context that would allow it is not accepted as the server's
    lax = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        lax.minimum_version = ssl.TLSVersion.TLSv1
    with pytest.raises(ValueError, match=r"below TLS 1\.2"):
        ServerConfig(tls=lax)
    assert server_tls_context(pki.cert, pki.key).minimum_version >= ssl.TLSVersion.TLSv1_2


def test_a_client_context_is_refused_as_the_servers() -> None:
    with pytest.raises(ValueError, match="server-side context"):
        ServerConfig(tls=ssl.create_default_context())


# -- the terminal commands ------------------------------------------------------------------


async def pushwire(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(
            [*PUSHWIRE, *args], capture_stdout=True, capture_stderr=True, check=False
        )


def tls_options(pki: Pki) -> list[str]:
    return ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]


def serve_tls(pki: Pki) -> AbstractAsyncContextManager[str]:
    """``pushwire serve --tls-cert --tls-key --port 0``; yields the address it prints."""
    return serve(*tls_options(pki), expect_prefix="pushwire listening on tls://127.0.0.1:")


@pytest.mark.slow
@pytest.mark.spec("PW-TRANSPORT-1", "PW-TRANSPORT-4")
async def test_serve_pub_and_sub_commands_over_tls(pki: Pki) -> None:
    async with serve_tls(pki) as url:
        hostport = url.removeprefix("tls://")
        ca = str(pki.ca)
        pub = await pushwire(
            "pub", "news/eu", "hello tls", "--tls", "--tls-ca", ca, "--server", hostport
        )
        assert (pub.returncode, pub.stdout) == (0, b"1\n"), pub.stderr
        # the printed tls:// address is accepted as it is, and --tls-ca implies --tls
        sub = await pushwire(
            "sub", "news/eu", "--since", "oldest", "--count", "1", "--tls-ca", ca, "--server", url
        )
        assert (sub.returncode, sub.stdout) == (0, b"news/eu 1 hello tls\n"), sub.stderr
        # without the CA: one clear line, exit 3, no traceback
        untrusted = await pushwire("pub", "news/eu", "x", "--tls", "--server", hostport)
        plaintext = await pushwire("pub", "news/eu", "x", "--server", hostport)
    err = untrusted.stderr.decode()
    assert untrusted.returncode == 3 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("pushwire: error: cannot connect to")
    assert "TLS certificate verification failed" in err
    err = plaintext.stderr.decode()
    assert plaintext.returncode == 3 and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tls-cert", "{cert}"], "--tls-cert and --tls-key go together"),
        (["--tls-key", "{key}"], "--tls-cert and --tls-key go together"),
        (["--tls-cert", "{missing}", "--tls-key", "{key}"], "cannot read TLS certificate"),
        (["--tls-cert", "{key}", "--tls-key", "{key}"], "cannot use TLS certificate"),
    ],
    ids=["cert-only", "key-only", "missing-cert", "not-a-cert"],
)
def test_serve_reports_tls_option_mistakes_in_one_line(
    pki: Pki, tmp_path: Path, args: list[str], expected: str
) -> None:
    files = {"cert": pki.cert, "key": pki.key, "missing": tmp_path / "nope.pem"}
    result = subprocess.run(
        [*PUSHWIRE, "serve", "--port", "0", *(a.format(**files) for a in args)],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pushwire serve: "), result.stderr
    assert expected in lines[0]


async def test_client_commands_report_an_unusable_ca_file_in_one_line(tmp_path: Path) -> None:
    missing = await pushwire("pub", "t", "x", "--tls-ca", str(tmp_path / "nope.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    empty = await pushwire("sub", "t", "--tls-ca", str(garbage))
    for result in (missing, empty):
        err = result.stderr.decode()
        assert result.returncode == 2, err
        assert err.strip().splitlines() == [err.strip()] and "--tls-ca" in err, err
