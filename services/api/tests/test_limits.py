"""The REST port's limits on a real uvicorn (``remsim_api.limits``): body and header sizes,
slow clients, and problem answers for malformed HTTP, seen through raw sockets."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from remsim_api.app import create_app
from remsim_api.limits import (
    COALESCE_LIMIT,
    MAX_BODY_SIZE,
    MAX_HEADER_SIZE,
    CoalescedWrites,
    http_options,
)
from remsim_api.metrics import REGISTRY
from remsim_api.settings import ApiSettings
from remsim_control import MemoryBus, MemoryStore
from tests.system import end_process, free_port

from .conftest import Serve

BIN = Path(sys.executable).parent
WAIT = 10.0
"""Seconds any answer may take (a bound, not a measurement)."""
SHORT_TIMEOUT = 0.3
"""The request timeout of these tests, seconds."""
MAP = b'{"bank":{"bankId":1,"slotNr":0},"client":{"clientId":23,"slotNr":0}}'


@pytest.fixture
async def port(serve: Serve) -> AsyncIterator[int]:
    settings = ApiSettings(rest_request_timeout=SHORT_TIMEOUT)
    async with serve(create_app(MemoryStore(), MemoryBus()), **http_options(settings)) as port:
        yield port


async def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` raw, read until the server closes: status, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(WAIT):
            answer = await reader.read(-1)
    finally:
        writer.close()
    return parse(answer)


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def assert_problem(headers: dict[str, str], body: bytes, status: int) -> dict[str, Any]:
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    problem: dict[str, Any] = json.loads(body)
    assert problem["status"] == status and problem["title"] and problem["detail"]
    return problem


def post(content_length: int, data: bytes) -> bytes:
    return (
        b"POST /api/backend/v1/slotmaps HTTP/1.1\r\nHost: remsim\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (content_length, data)
    )


def chunked(*chunks: bytes) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    return (
        b"POST /api/backend/v1/slotmaps HTTP/1.1\r\nHost: remsim\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + body
        + b"0\r\n\r\n"
    )


async def healthz(port: int) -> int:
    status, _, _ = await exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    return status


# --- bodies ----------------------------------------------------------------------------------


async def test_a_1_gb_body_is_refused_without_being_read(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post(1_000_000_000, b"x" * 1000))  # and never the rest
    async with asyncio.timeout(WAIT):
        answer = await reader.read(-1)  # the server answers and closes
        assert await healthz(port) == 200  # meanwhile, the loop serves others
    writer.close()
    status, headers, body = parse(answer)
    assert status == 413
    assert str(MAX_BODY_SIZE) in assert_problem(headers, body, 413)["detail"]


async def test_a_body_of_the_limit_is_read(port: int) -> None:
    padded = MAP[:-1] + b',"pad":"' + b" " * (MAX_BODY_SIZE - len(MAP) - 9) + b'"}'
    assert len(padded) == MAX_BODY_SIZE
    status, _, _ = await exchange(
        port,
        post(len(padded), padded).replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1),
    )
    assert status == 201


async def test_a_chunked_body_is_read_up_to_the_limit_only(port: int) -> None:
    status, headers, body = await exchange(port, chunked(*[b" " * 16384] * 5, MAP))
    assert status == 413
    assert_problem(headers, body, 413)


async def test_a_small_chunked_body_reaches_the_api(port: int) -> None:
    request = chunked(MAP[:20], MAP[20:]).replace(b"Host:", b"Connection: close\r\nHost:")
    status, _, body = await exchange(port, request)
    assert status == 201 and json.loads(body)["state"] == "NEW"


# --- malformed HTTP -----------------------------------------------------------------------------


async def test_two_content_lengths_are_a_400_problem(port: int) -> None:
    request = post(2, b"{}").replace(b"Content-Length:", b"Content-Length: 3\r\nContent-Length:")
    status, headers, body = await exchange(port, request)
    assert status == 400
    assert_problem(headers, body, 400)


async def test_an_oversized_header_is_a_431_problem(port: int) -> None:
    request = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2 * MAX_HEADER_SIZE + b"\r\n\r\n"
    )
    status, headers, body = await exchange(port, request)
    assert status == 431
    assert_problem(headers, body, 431)


async def test_garbage_is_a_400_problem(port: int) -> None:
    status, headers, body = await exchange(port, b"\x16\x03\x01 not HTTP at all\r\n\r\n")
    assert status == 400
    assert_problem(headers, body, 400)


# --- slow clients -------------------------------------------------------------------------------


async def test_a_request_head_trickling_in_gets_408_and_is_closed(port: int) -> None:
    status, headers, body = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert status == 408
    assert_problem(headers, body, 408)


async def test_a_silent_connection_is_closed(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(WAIT):
        assert await reader.read(-1) == b""
    writer.close()


async def test_a_body_trickling_in_is_cut_off(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post(len(MAP), MAP[:10]))
    async with asyncio.timeout(WAIT):
        assert await reader.read(-1) == b""
    writer.close()


async def test_keep_alive_requests_each_get_the_request_timeout(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(2):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(WAIT):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(parse(head)[1]["content-length"])
            await reader.readexactly(length)
        assert head.startswith(b"HTTP/1.1 200")
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # the third one too slowly
    async with asyncio.timeout(WAIT):
        status, headers, body = parse(await reader.read(-1))
    writer.close()
    assert_problem(headers, body, status)
    assert status == 408


async def test_a_connection_over_max_connections_is_closed_at_once(serve: Serve) -> None:
    settings = ApiSettings(rest_request_timeout=3 * WAIT)  # silent ones stay for the test
    options = http_options(settings, max_connections=2)
    refused = ("remsim_http_refused_total", {"cause": "connections"})
    before = REGISTRY.get_sample_value(*refused) or 0.0
    async with serve(create_app(MemoryStore(), MemoryBus()), **options) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(WAIT):  # at once, not after the request timeout
            assert await reader.read(-1) == b""
        writer.close()
        assert REGISTRY.get_sample_value(*refused) == before + 1
        held.pop()[1].close()  # one goes: room for a request
        async with asyncio.timeout(WAIT):
            while (status := await _healthz_or_closed(port)) is None:
                await asyncio.sleep(0.05)  # until the server has seen it go
        assert status == 200
        for _, silent in held:
            silent.close()


async def _healthz_or_closed(port: int) -> int | None:
    """/healthz's status, or None if the connection was refused."""
    try:
        return await healthz(port)
    except (OSError, ValueError, IndexError):  # closed before an answer
        return None


# --- the real programs ---------------------------------------------------------------------


def program(name: str, rest_port: int) -> list[str]:
    rest = ["--rest-host", "127.0.0.1", "--rest-port", str(rest_port)]
    if name == "remsim-server":
        rspro = ["--rspro-host", "127.0.0.1", "--rspro-port", str(free_port())]
        return [name, *rest, *rspro, "--store", "memory"]
    return [name, *rest]


@pytest.mark.parametrize("name", ["remsim-api", "remsim-server"])
async def test_the_programs_serve_with_these_limits(name: str, tmp_path: Path) -> None:
    rest_port = free_port()
    log = tmp_path / f"{name}.log"
    argv = program(name, rest_port)
    env = os.environ | {"REMSIM_REST_REQUEST_TIMEOUT": str(SHORT_TIMEOUT)}
    with log.open("wb") as out:
        proc = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], stdout=out, stderr=out, env=env)
    try:
        async with asyncio.timeout(WAIT):
            while not await _answers(rest_port):
                assert proc.poll() is None, log.read_text()
                await asyncio.sleep(0.05)
            status, headers, body = await exchange(rest_port, post(1_000_000_000, b"x" * 1000))
            assert status == 413
            assert_problem(headers, body, 413)
            request = post(2, b"{}").replace(
                b"Content-Length:", b"Content-Length: 3\r\nContent-Length:"
            )
            status, headers, body = await exchange(rest_port, request)
            assert status == 400
            assert_problem(headers, body, 400)
            status, headers, body = await exchange(rest_port, b"GET /healthz HTTP/1.1\r\n")
            assert status == 408
            assert_problem(headers, body, 408)
    finally:
        end_process(proc)
    assert "Traceback" not in log.read_text()


async def _answers(port: int) -> bool:
    try:
        return await healthz(port) == 200
    except OSError:
        return False


KEEPALIVE = 0.2
"""The server's PING interval in the next test (its default is 30 s)."""
LATE = 2.0
"""A gap between two PINGs this long means the event loop stalled (a 1 GB body read on
it once stalled the keepalive for 5.6 s); the schedule itself is KEEPALIVE."""
FLOOD = 2.0
"""Seconds the clients keep announcing 1 GB bodies."""


async def test_while_1_gb_bodies_are_refused_the_keepalive_is_never_late(
    tmp_path: Path,
) -> None:
    """The real ``remsim-server``: for two seconds eight clients at once announce 1 GB
    bodies, one request after the other; each gets 413 without the body being read, and a
    bankd on the RSPRO port meanwhile gets its PINGs on schedule."""
    from remsim_testing.server import connect_bankd

    rest_port, rspro_port = free_port(), free_port()
    argv = program("remsim-server", rest_port)
    argv[argv.index("--rspro-port") + 1] = str(rspro_port)
    env = os.environ | {"REMSIM_KEEPALIVE_INTERVAL": str(KEEPALIVE)}
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], stdout=out, stderr=out, env=env)
    try:
        async with asyncio.timeout(WAIT):
            while not await _answers(rest_port):
                assert proc.poll() is None, log.read_text()
                await asyncio.sleep(0.05)
        bankd = await connect_bankd(rspro_port)
        pings: list[float] = []
        loop = asyncio.get_running_loop()

        async def watch() -> None:
            seen = bankd.pings
            while True:
                await asyncio.sleep(0.005)
                if bankd.pings != seen:
                    seen = bankd.pings
                    pings.append(loop.time())

        async def flood() -> list[int]:
            """1 GB announced, the first KiB sent, the answer read; again for a while."""
            statuses = []
            until = loop.time() + FLOOD
            while loop.time() < until:
                statuses.append((await exchange(rest_port, post(1_000_000_000, b"x" * 1000)))[0])
            return statuses

        watcher = asyncio.create_task(watch())
        start = loop.time()
        statuses = [s for each in await asyncio.gather(*(flood() for _ in range(8))) for s in each]
        await asyncio.sleep(4 * KEEPALIVE)  # and a few PINGs after
        watcher.cancel()
        assert len(statuses) >= 8 and set(statuses) == {413}
        assert not bankd.closed.is_set()  # the bankd was never dropped
        gaps = [b - a for a, b in zip([start, *pings], pings, strict=False)]
        print(
            f"{len(statuses)} requests refused; {len(pings)} PINGs, longest gap {max(gaps):.3f} s"
        )
        assert len(pings) >= 3 and max(gaps) < LATE, gaps
    finally:
        end_process(proc)
    assert "Traceback" not in log.read_text()


# --- one write per answer (CoalescedWrites) ------------------------------------------------


class RecordingTransport(asyncio.Transport):
    """A transport that records what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_writes_of_one_loop_iteration_go_out_together_and_in_order() -> None:
    raw = RecordingTransport()
    transport = CoalescedWrites(raw, asyncio.get_running_loop())
    transport.write(b"head ")
    transport.writelines([b"body", b""])
    assert raw.writes == []
    assert transport.get_write_buffer_size() == len(b"head body")
    await asyncio.sleep(0)
    assert raw.writes == [b"head body"]
    transport.write(b"last words")
    transport.close()  # what was written before goes out first
    assert raw.writes == [b"head body", b"last words"] and raw.closed


async def test_a_large_answer_is_not_held_back() -> None:
    raw = RecordingTransport()
    transport = CoalescedWrites(raw, asyncio.get_running_loop())
    transport.write(b"x" * COALESCE_LIMIT)
    assert raw.writes == [b"x" * COALESCE_LIMIT]


async def test_the_api_protocol_sends_an_answer_in_one_write() -> None:
    """uvicorn writes the head and the body of an answer separately: one write here."""
    config = uvicorn.Config(
        create_app(MemoryStore(), MemoryBus()), log_config=None, **http_options(ApiSettings())
    )
    config.load()
    protocol_class: Any = config.http_protocol_class  # ApiProtocol
    protocol = protocol_class(config, ServerState(), {})
    raw = RecordingTransport()
    protocol.connection_made(raw)
    protocol.data_received(
        b"POST /api/backend/v1/slotmaps HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(MAP), MAP)
    )
    async with asyncio.timeout(WAIT):
        while not raw.writes:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # nothing else follows
    assert len(raw.writes) == 1
    status, headers, body = parse(raw.writes[0])
    assert status == 201 and len(body) == int(headers["content-length"])
    protocol.connection_lost(None)
