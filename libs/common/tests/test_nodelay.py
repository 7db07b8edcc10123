"""The HTTP listeners' connections send without Nagle's delay (issue 14): uvicorn writes an
answer's head and body separately, and with Nagle on, the body waited for the client's
delayed ACK, 40 ms on every request of a keep-alive connection."""

import socket

from remsim_common.health import bind


def test_connections_to_an_http_listener_have_tcp_nodelay() -> None:
    listener = bind("127.0.0.1", 0)
    try:
        with socket.create_connection(listener.getsockname()):
            listener.setblocking(True)
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        listener.close()
