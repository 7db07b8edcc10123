"""What a TLS record costs per round trip, client by client: an echo of 30-byte messages
(a TPDU's size) between two processes pinned to one CPU, plaintext and TLS 1.3 side by side.

The echo server is bankd-style: one blocking thread per connection. The clients:

* blocking socket / blocking ``ssl.SSLSocket`` (the minimal client's and bankd's way);
* asyncio ``create_connection`` plaintext, and with ``ssl=`` (asyncio's TLS transport,
  ``sslproto``, every record through memory BIOs in Python);
* ``rspro.tls.connect_tls`` (``TlsSocketTransport``: OpenSSL on the non-blocking socket,
  what RSPRO TLS connections use).

``python bench/tls_echo.py [--rounds 5] [--count 3000] [--cpu 0]``; the figures are
median round trips in µs per round, and what TLS adds to each kind of client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import ssl
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from remsim_testing.pki import TestCA
from rspro.tls import connect_tls

MESSAGE = b"x" * 30
WARMUP = 200
PLAIN = b"p"
"""The first byte a plaintext client sends; a TLS client's first byte is a handshake record."""


def contexts(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client): remsim's own mutual TLS contexts, certificates from a test CA."""
    ca = TestCA(directory)
    server = ca.issue("server", "urn:remsim:server").security().server_context
    client = ca.issue("client", "urn:remsim:client:23").security().client_context
    assert server is not None and client is not None
    return server, client


def serve(listener: socket.socket, context: ssl.SSLContext) -> None:
    """The echo server's process: a thread per connection, plaintext or TLS."""

    def echo(conn: socket.socket) -> None:
        try:
            peer: socket.socket = conn
            if conn.recv(1, socket.MSG_PEEK) != PLAIN:
                peer = context.wrap_socket(conn, server_side=True)
            else:
                conn.recv(1)
            while data := peer.recv(4096):
                peer.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def median_us(samples: list[float]) -> float:
    return statistics.median(samples[WARMUP:]) * 1e6


def blocking(port: int, context: ssl.SSLContext | None, count: int) -> float:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    peer = sock if context is None else context.wrap_socket(sock, server_hostname="127.0.0.1")
    if context is None:
        sock.sendall(PLAIN)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        peer.sendall(MESSAGE)
        received = 0
        while received < len(MESSAGE):
            received += len(peer.recv(4096))
        samples.append(time.perf_counter() - start)
    peer.close()
    return median_us(samples)


class Echoes(asyncio.Protocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.received = 0

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.waiter is not None and self.received >= len(MESSAGE) and not self.waiter.done():
            self.waiter.set_result(None)


async def asynchronous(port: int, kind: str, context: ssl.SSLContext, count: int) -> float:
    loop = asyncio.get_running_loop()
    transport: asyncio.BaseTransport
    if kind == "plain":
        transport, protocol = await loop.create_connection(Echoes, "127.0.0.1", port)
    elif kind == "sslproto":
        transport, protocol = await loop.create_connection(Echoes, "127.0.0.1", port, ssl=context)
    else:
        transport, created = await connect_tls(Echoes, "127.0.0.1", port, context)
        assert isinstance(created, Echoes)
        protocol = created
    assert isinstance(transport, asyncio.Transport)
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if kind == "plain":
        transport.write(PLAIN)
    samples = []
    for _ in range(count):
        protocol.received = 0
        protocol.waiter = loop.create_future()
        start = time.perf_counter()
        transport.write(MESSAGE)
        await protocol.waiter
        samples.append(time.perf_counter() - start)
    transport.close()
    return median_us(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=3000, help="round trips per client")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU both processes run on")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        server_context, client_context = contexts(Path(directory))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    os.sched_setaffinity(0, {args.cpu})
    child = os.fork()
    if child == 0:  # the echo server
        serve(listener, server_context)
        os._exit(0)
    listener.close()
    clients: dict[str, Callable[[], float]] = {
        "blocking socket": lambda: blocking(port, None, args.count),
        "blocking SSLSocket": lambda: blocking(port, client_context, args.count),
        "asyncio plaintext": lambda: asyncio.run(
            asynchronous(port, "plain", client_context, args.count)
        ),
        "asyncio sslproto": lambda: asyncio.run(
            asynchronous(port, "sslproto", client_context, args.count)
        ),
        "rspro.tls": lambda: asyncio.run(asynchronous(port, "rspro", client_context, args.count)),
    }
    results: dict[str, list[float]] = {name: [] for name in clients}
    try:
        print(f"# echo of {len(MESSAGE)} bytes, both processes on CPU {args.cpu}, "
              f"{args.rounds} rounds x {args.count}; median round trip, µs")  # fmt: skip
        print("round  " + "  ".join(f"{name:>18}" for name in clients))
        for index in range(args.rounds):
            for name, run in clients.items():  # the clients take turns in each round
                results[name].append(run())
            print(f"{index:5}  " + "  ".join(f"{results[n][-1]:18.1f}" for n in clients))
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    median = {name: statistics.median(values) for name, values in results.items()}
    print("median " + "  ".join(f"{median[n]:18.1f}" for n in clients))
    print(f"TLS adds: blocking {median['blocking SSLSocket'] - median['blocking socket']:.1f} µs, "
          f"asyncio sslproto {median['asyncio sslproto'] - median['asyncio plaintext']:.1f} µs, "
          f"rspro.tls {median['rspro.tls'] - median['asyncio plaintext']:.1f} µs")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
