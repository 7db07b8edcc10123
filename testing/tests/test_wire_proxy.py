"""The wire proxy of the benchmarks and system tests: it forwards both ways, counts the
RSPRO messages by name, and delays each direction by the given time."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from remsim_testing.wire_proxy import WireProxy
from rspro import BankSlot, ClientSlot, RsproPdu, TpduCardToModem, TpduModemToCard, encode
from rspro.ipa import PING, rspro_frame

UP = rspro_frame(encode(RsproPdu(TpduModemToCard(ClientSlot(23, 0), BankSlot(1, 0), bytes(5)))))
DOWN = rspro_frame(
    encode(RsproPdu(TpduCardToModem(BankSlot(1, 0), ClientSlot(23, 0), b"\x90\x00")))
)


@pytest.fixture
def echo_peer() -> Iterator[tuple[str, int]]:
    """Answers every chunk with DOWN (once per UP frame received)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            buf = b""
            while data := conn.recv(65536):
                buf += data
                while len(buf) >= len(UP):
                    buf = buf[len(UP) :]
                    conn.sendall(DOWN)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[:2]
    listener.close()


def exchange(port: int, frames: bytes, answers: int) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.perf_counter()
        sock.sendall(frames)
        got = b""
        while len(got) < answers * len(DOWN):
            got += sock.recv(65536)
        return time.perf_counter() - start


def test_it_counts_the_messages_each_way(echo_peer: tuple[str, int]) -> None:
    with WireProxy(echo_peer) as proxy:
        exchange(proxy.port, UP + PING + UP, answers=2)
        assert proxy.count("up", "tpduModemToCard") == 2
        assert proxy.count("down", "tpduCardToModem") == 2
        assert proxy.counts("up") == {"tpduModemToCard": 2}


def test_it_adds_its_delay_each_way(echo_peer: tuple[str, int]) -> None:
    with WireProxy(echo_peer, delay=0.02) as proxy:
        assert exchange(proxy.port, UP, answers=1) >= 0.04
