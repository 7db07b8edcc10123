"""vpcd's side of the socket, for testing cards.

``FakeVpcd`` listens like the pcscd driver does and talks like Debian's vpcd 0.8: length and
body in two writes with Nagle on, which is what makes a card without quick ACKs slow.
"""

from __future__ import annotations

import socket


class FakeVpcd:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.listener.settimeout(5)

    def accept(self, timeout: float = 5.0) -> socket.socket:
        """The card's next connection (blocking, up to ``timeout``)."""
        self.listener.settimeout(timeout)
        sock, _ = self.listener.accept()
        sock.settimeout(5)
        return sock

    @staticmethod
    def send(sock: socket.socket, payload: bytes) -> None:
        sock.sendall(len(payload).to_bytes(2, "big"))
        sock.sendall(payload)

    @staticmethod
    def recv(sock: socket.socket) -> bytes:
        head = read_exactly(sock, 2)
        return read_exactly(sock, int.from_bytes(head, "big"))

    def exchange(self, sock: socket.socket, payload: bytes) -> bytes:
        self.send(sock, payload)
        return self.recv(sock)

    def close(self) -> None:
        self.listener.close()


def read_exactly(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes from ``sock``; EOFError if the card closes the connection first."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("the card closed the connection")
        buf += chunk
    return buf
