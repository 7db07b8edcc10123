"""The connecting side of an RSPRO link (bankd→server, client→server, client→bankd).

``LinkFsm`` is the sans-IO state machine of the deployed components' current version
(procedures.md §3.1): connect, send the connect*Req, wait for its response, and on any
loss reconnect with the original's back-off. ``RsproLink`` drives it with asyncio.

With TLS, ``RsproLink(accept_peer=...)`` judges who answered before the connect*Req goes
out: a peer it refuses is closed (one log line) and retried as a connect that failed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl as _ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .aio import RsproStream, open_connection
from .connection import DEFAULT_KEEPALIVE, Keepalive
from .errors import ConnectionClosedError, KeepaliveTimeoutError, RsproError
from .messages import (
    ComponentType,
    ConnectBankRes,
    ConnectClientReq,
    ConnectClientRes,
    Message,
    RemsimFeatures,
    ResultCode,
    RsproPdu,
)

log = logging.getLogger("rspro.link")

CONNECT_RES_TIMEOUT = 10.0  # T1: from TCP up to the connect*Res
TCP_CONNECT_TIMEOUT = 10.0  # T2: for a TCP connect that gets no answer at all
BACKOFF_RESET_AFTER = 32.0  # an attempt older than this starts the back-off table over
BACKOFF_TABLE: tuple[float, ...] = (
    (0.0,) * 3 + (1.0,) * 30 + (2.0,) * 30 + (4.0,) * 30 + (8.0,) * 30 + (16.0,)
)
"""Seconds between attempts, by attempt: also after a refused connect, so that a peer
back after a restart is reached within about a second."""
CONNECT_FAILURE_LOG_INTERVAL = 60.0  # a failing connect logs a warning at most this often


class LinkState(enum.Enum):
    INIT = "INIT"
    REESTABLISH_DELAY = "REESTABLISH_DELAY"
    REESTABLISH = "REESTABLISH"
    ESTABLISHED = "ESTABLISHED"
    CONNECTED = "CONNECTED"


# --- actions the FSM asks its driver to carry out --------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenTcp:
    """Start a TCP connect to the peer."""


@dataclass(frozen=True, slots=True)
class CloseTcp:
    """Close the current TCP connection; its loss must not be reported back."""


@dataclass(frozen=True, slots=True)
class SendConnectReq:
    """TCP is up: send the connect*Req (the keepalive PING is already queued before it)."""


@dataclass(frozen=True, slots=True)
class NotifyConnected:
    pass


@dataclass(frozen=True, slots=True)
class NotifyLost:
    pass


Action = OpenTcp | CloseTcp | SendConnectReq | NotifyConnected | NotifyLost


class LinkFsm:
    """``RSPRO_CLIENT``: every input takes ``now`` and returns the actions to carry out."""

    def __init__(self, peer_type: ComponentType, backoff: tuple[float, ...] = BACKOFF_TABLE):
        self.peer_type = peer_type
        self.backoff = backoff
        self.state = LinkState.INIT
        self.deadline: float | None = None
        self._index = 0
        self._last_attempt: float | None = None

    def establish(self, now: float) -> list[Action]:
        """(Re)connect now, forgetting the back-off history."""
        self._index = 0
        self._last_attempt = None
        return self._schedule_reconnect(now)

    def disconnect(self) -> list[Action]:
        """Close and stay down: no automatic reconnect."""
        actions = self._leave()
        self.state, self.deadline = LinkState.INIT, None
        return actions

    def tcp_up(self, now: float) -> list[Action]:
        if self.state is not LinkState.REESTABLISH:
            return []
        self.state, self.deadline = LinkState.ESTABLISHED, now + CONNECT_RES_TIMEOUT
        return [SendConnectReq()]

    def tcp_down(self, now: float) -> list[Action]:
        """The TCP connection failed or was lost (keepalive timeouts count as such)."""
        if self.state is LinkState.REESTABLISH:  # the connect failed (refused, unreachable):
            self.state = LinkState.REESTABLISH_DELAY  # nothing to close; the next step of
            return self._schedule_reconnect(now)  # the back-off table, not T2
        if self.state in (LinkState.ESTABLISHED, LinkState.CONNECTED):
            return self._schedule_reconnect(now)
        return []

    def connect_res(self, result: ResultCode, peer_type: ComponentType, now: float) -> list[Action]:
        if self.state is not LinkState.ESTABLISHED:
            return []
        if peer_type is not self.peer_type:
            log.error(
                "peer identifies as %s, expected %s: check your IP/port configuration",
                peer_type.name,
                self.peer_type.name,
            )
            return self.disconnect()
        if result is not ResultCode.OK:
            return self._schedule_reconnect(now)
        self.state, self.deadline = LinkState.CONNECTED, None
        return [NotifyConnected()]

    def timeout(self, now: float) -> list[Action]:
        if self.deadline is None or now < self.deadline:
            return []
        if self.state is LinkState.REESTABLISH_DELAY:
            self.state, self.deadline = LinkState.REESTABLISH, now + TCP_CONNECT_TIMEOUT
            self._last_attempt = now
            return [OpenTcp()]
        return self._schedule_reconnect(now)  # T1 or T2 expired

    def _leave(self) -> list[Action]:
        actions: list[Action] = []
        if self.state is LinkState.CONNECTED:
            actions.append(NotifyLost())
        if self.state in (LinkState.REESTABLISH, LinkState.ESTABLISHED, LinkState.CONNECTED):
            actions.append(CloseTcp())
        return actions

    def _schedule_reconnect(self, now: float) -> list[Action]:
        actions = self._leave()
        since = float("inf") if self._last_attempt is None else now - self._last_attempt
        if since > BACKOFF_RESET_AFTER:
            self._index = 0
        wait = self.backoff[self._index] - since
        self._index = min(self._index + 1, len(self.backoff) - 1)
        self.state = LinkState.REESTABLISH_DELAY
        self.deadline = now + (wait if wait > 0 else 0.001)
        return actions


class RsproLink:
    """asyncio driver of a ``LinkFsm``: one reconnecting RSPRO connection to a peer."""

    def __init__(
        self,
        *,
        name: str,
        connect_req: Callable[[], Message],
        peer_type: ComponentType,
        on_pdu: Callable[[RsproPdu], None],
        on_connected: Callable[[], None] | None = None,
        on_lost: Callable[[], None] | None = None,
        keepalive: Keepalive | None = DEFAULT_KEEPALIVE,
        ssl: _ssl.SSLContext | None = None,
        accept_peer: Callable[[Any], str | None] | None = None,
    ) -> None:
        """``accept_peer(ssl_object)`` (TLS: the handshake's ``ssl.SSLObject``, plaintext:
        None) runs on every connection before the connect*Req: a string says why the peer
        is refused; None accepts it."""
        self.name = name
        self.host = ""
        self.port = 0
        self._connect_req = connect_req
        self._on_pdu = on_pdu
        self._on_connected = on_connected
        self._on_lost = on_lost
        self._keepalive = keepalive
        self._ssl = ssl
        self._accept_peer = accept_peer
        self._fsm = LinkFsm(peer_type)
        self._loop = asyncio.get_running_loop()
        self._stream: RsproStream | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_failure_warning: float | None = None
        self.last_error: RsproError | None = None
        """Why the last connection ended (a ``KeepaliveTimeoutError``, …), for logs and metrics."""
        self.features: RemsimFeatures | None = None
        """What the peer's connectClientRes accepted of our offer (remsim's own), on this
        connection; None from an original peer, before the answer, or without an offer.
        Offering (a connectClientReq with ``features.apdu``) lifts the connection's frame
        limit at once (``RsproConnection.allow_large_frames``): large answers may follow
        the acceptance in the same TCP segment; what we send stays small until accepted."""
        self._offered = False

    @property
    def state(self) -> LinkState:
        return self._fsm.state

    @property
    def connected(self) -> bool:
        return self._fsm.state is LinkState.CONNECTED

    def establish(self, host: str, port: int) -> None:
        """Connect to host:port now (a fresh connection even if already connected there)."""
        self.host, self.port = host, port
        self._run(self._fsm.establish(self._loop.time()))

    def disconnect(self) -> None:
        self._run(self._fsm.disconnect())

    def send(self, msg: Message | RsproPdu) -> bool:
        """Send when CONNECTED; otherwise the PDU is dropped (as the original does)."""
        if self._fsm.state is not LinkState.CONNECTED or self._stream is None:
            log.warning("%s link not connected: dropping %s", self.name, _msg_name(msg))
            return False
        try:
            self._stream.send(msg)
        except ConnectionClosedError:
            return False
        return True

    async def aclose(self) -> None:
        self.disconnect()
        if self._timer is not None:
            self._timer.cancel()

    # --- driving the FSM --------------------------------------------------------------------

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, OpenTcp):
                self._task = self._loop.create_task(self._connect())
            elif isinstance(action, CloseTcp):
                self._drop_connection()
            elif isinstance(action, SendConnectReq):
                assert self._stream is not None
                req = self._connect_req()
                self._offered = isinstance(req, ConnectClientReq) and bool(
                    req.features is not None and req.features.apdu
                )
                if self._offered:  # the answer may come with large frames right behind it
                    self._stream.conn.allow_large_frames()
                self._stream.send(req)
            elif isinstance(action, NotifyConnected):
                log.info("%s link connected to %s:%s", self.name, self.host, self.port)
                if self._on_connected is not None:
                    self._on_connected()
            elif isinstance(action, NotifyLost):
                log.info("%s link to %s:%s lost", self.name, self.host, self.port)
                if self._on_lost is not None:
                    self._on_lost()
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fsm.deadline is not None:
            self._timer = self._loop.call_at(self._fsm.deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._run(self._fsm.timeout(self._loop.time()))

    def _drop_connection(self) -> None:
        task, self._task = self._task, None
        stream, self._stream = self._stream, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if stream is not None:
            stream.close()

    async def _connect(self) -> None:
        me = asyncio.current_task()
        try:
            stream = await open_connection(
                self.host, self.port, keepalive=self._keepalive, ssl=self._ssl, drop_invalid=True
            )
        except OSError as exc:  # TimeoutError included
            self._connect_failed(me, f"connect to {self.host}:{self.port} failed: {exc}")
            return
        if self._task is not me:  # superseded while connecting
            stream.close()
            return
        if self._accept_peer is not None:
            refusal = self._accept_peer(stream.get_extra_info("ssl_object"))
            if refusal is not None:
                stream.close()
                self._connect_failed(me, f"refusing {self.host}:{self.port}: {refusal}")
                return
        self._stream = stream
        self.features = None
        self._last_failure_warning = None
        stream.set_receiver(self._dispatch)
        self._run(self._fsm.tcp_up(self._loop.time()))
        await stream.wait_closed()
        if self._stream is stream:
            self.last_error = stream.error
            if isinstance(stream.error, KeepaliveTimeoutError):
                log.warning("%s link to %s:%s: keepalive timeout", self.name, self.host, self.port)
            else:
                log.debug("%s link: %s", self.name, stream.error)
            self._stream = None
            self._run(self._fsm.tcp_down(self._loop.time()))

    def _connect_failed(self, me: asyncio.Task[None] | None, why: str) -> None:
        # The first failure and then one a minute are worth an operator's eye.
        now = self._loop.time()
        last = self._last_failure_warning
        if last is None or now - last >= CONNECT_FAILURE_LOG_INTERVAL:
            self._last_failure_warning = now
            log.warning("%s link: %s", self.name, why)
        else:
            log.debug("%s link: %s", self.name, why)
        if self._task is me:
            self._run(self._fsm.tcp_down(self._loop.time()))

    def _dispatch(self, pdu: RsproPdu) -> None:
        msg = pdu.msg
        if isinstance(msg, ConnectBankRes | ConnectClientRes):
            if isinstance(msg, ConnectClientRes) and self._offered:
                self.features = msg.features if msg.result is ResultCode.OK else None
            if msg.result is not ResultCode.OK:
                log.error("%s link: %s answered %s", self.name, self.host, msg.result.name)
            self._run(self._fsm.connect_res(msg.result, msg.identity.type, self._loop.time()))
        elif self._fsm.state is LinkState.CONNECTED:
            self._on_pdu(pdu)
        else:
            log.error("%s link: unexpected %s before connect", self.name, type(msg).__name__)


def _msg_name(msg: Message | RsproPdu) -> str:
    return type(msg.msg if isinstance(msg, RsproPdu) else msg).__name__
