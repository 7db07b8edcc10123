"""The asyncio client: the main FSM, its two RSPRO links and a modem front-end.

``Client`` is the only place where the sans-IO :class:`~remsim_client.main_fsm.ClientFsm`
meets the world: link events and modem events go in, and the actions it returns are
carried out here, in order, one list after the other (a hook or link call that raises a
new event re-enters only after the current actions are done).

    async with Client(ClientConfig(server_host="10.0.0.1", client_slot=ClientSlot(23, 0)),
                      frontend, security=TransportSecurity.from_settings(settings)) as client:
        await frontend.run()   # whatever the front-end's main loop is

Both links (to the server, to the bankd) take their socket security from the one
``TransportSecurity`` given: plaintext by default, byte for byte the original's; with TLS
files, mutual TLS on both. With TLS, a peer is who its certificate says: the server link
accepts only ``urn:remsim:server``, the bankd link only ``urn:remsim:bankd:<bankId>`` of
the bank slot the last configClientBankReq named. Any other peer is closed before the
connectClientReq, with one log line, and retried as a connect that failed.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

from remsim_common import PeerIdentity, TransportSecurity
from remsim_common.transport import Role
from rspro import ComponentType, ConnectClientReq, RsproPdu, SlotPhysStatus
from rspro.link import LinkState, RsproLink

from .config import ClientConfig
from .frontend import ModemFrontend
from .main_fsm import (
    Action,
    BankSlotStatus,
    CardInsert,
    CardRemove,
    CardToModem,
    Cause,
    ClientFsm,
    ConnectBankd,
    DisconnectBankd,
    MainState,
    ModemReset,
    RunScript,
    SendToBankd,
    SendToServer,
    SetAtr,
    SimLocal,
    SimRemote,
)
from .script import ScriptRunner, remsim_env

log = logging.getLogger("remsim.client")


def refusal(peer: PeerIdentity | None, role: Role, id_: int | None) -> str | None:
    """Why a TLS peer is not the ``role`` (``id_``) expected, or None if it is."""
    if peer is not None and peer.names(role, id_):
        return None
    expected = f"urn:remsim:{role}" + ("" if id_ is None else f":{id_}")
    if peer is None:
        return f"a certificate naming no remsim peer, not {expected}"
    return f"certificate {peer.subject!r} ({peer}), not {expected}"


class Client:
    """One remsim client slot: connects to the server, then to whichever bankd it names."""

    def __init__(
        self,
        config: ClientConfig,
        frontend: ModemFrontend,
        *,
        security: TransportSecurity = TransportSecurity.PLAINTEXT,
    ) -> None:
        self.config = config
        self.frontend = frontend
        self.security = security
        self.fsm = ClientFsm(
            config.client_slot,
            atr=config.atr,
            atr_ignore_rspro=config.atr_ignore_rspro,
            modem_status_upstream=config.modem_status_upstream,
        )
        self.script = ScriptRunner(config.event_script) if config.event_script else None
        self._identity = config.identity
        self._server: RsproLink | None = None
        self._bankd: RsproLink | None = None
        self._pending: collections.deque[Action] = collections.deque()
        self._busy = False
        self._closed = False
        self._bankd_sent = False  # whether the last SendToBankd went out
        frontend.attach(self)

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Create both links and start connecting to the server."""
        if self._server is not None:
            return
        fsm = self.fsm
        self._server = self._link(
            "server",
            ComponentType.REMSIM_SERVER,
            certified=lambda: ("server", None),
            on_pdu=lambda pdu: self._feed(fsm.server_message(pdu.msg)),
            on_connected=lambda: self._feed(fsm.server_connected()),
            on_lost=lambda: self._feed(fsm.server_lost()),
        )
        self._bankd = self._link(
            "bankd",
            ComponentType.REMSIM_BANKD,
            certified=lambda: ("bankd", fsm.bank_slot.bank_id),
            on_pdu=lambda pdu: self._feed(fsm.bankd_message(pdu.msg)),
            on_connected=lambda: self._feed(fsm.bankd_connected()),
            on_lost=lambda: self._feed(fsm.bankd_lost()),
        )
        log.info(
            "connecting to the server %s:%d%s",
            self.config.server_host,
            self.config.server_port,
            " (TLS)" if self.security.client_context is not None else "",
            extra={"client_slot": str(fsm.client_slot)},
        )
        self._server.establish(self.config.server_host, self.config.server_port)

    async def aclose(self, *, leave: bool = True) -> None:
        """Stop: drop both links; afterwards no hook or script runs any more.

        With ``leave`` (a clean stop), a card in use goes first as on losing the bankd: the
        hooks card_remove, sim_local, modem_reset and their scripts run, so that the modem
        is not left on an emulated card nobody answers for. Pass ``leave=False`` when the
        front-end cannot take them any more (e.g. its device is gone).
        """
        if self._closed:
            return
        if leave and self._server is not None:
            self._feed(self.fsm.stop())
        self._closed = True
        self._pending.clear()
        for link in (self._bankd, self._server):
            if link is not None:
                await link.aclose()

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- state -------------------------------------------------------------------------------

    @property
    def state(self) -> MainState:
        return self.fsm.state

    @property
    def server_state(self) -> LinkState:
        return LinkState.INIT if self._server is None else self._server.state

    @property
    def bankd_state(self) -> LinkState:
        return LinkState.INIT if self._bankd is None else self._bankd.state

    # --- ModemCore: events from the front-end ------------------------------------------------

    def modem_tpdu(self, data: bytes) -> bool:
        actions = self.fsm.modem_tpdu(data)
        if not actions or self._closed:
            return False
        if self._busy:  # re-entered from a hook: it goes out after the actions under way
            self._feed(actions)
            return True
        self._bankd_sent = False
        self._feed(actions)  # [SendToBankd(tpdu)], carried out right here
        return self._bankd_sent

    def modem_status(self, status: SlotPhysStatus) -> None:
        self._feed(self.fsm.modem_status(status))

    def modem_pts(self, pts: bytes) -> None:
        self._feed(self.fsm.modem_pts(pts))

    def frontend_event(self, cause: str) -> None:
        if not self._closed:
            self._run_script(cause)

    # --- links -------------------------------------------------------------------------------

    def _connect_req(self) -> ConnectClientReq:
        # Built when TCP is up, so a ConfigClientIdReq in between is honoured.
        return ConnectClientReq(self._identity, self.fsm.client_slot)

    def _link(
        self,
        name: str,
        peer_type: ComponentType,
        *,
        certified: Callable[[], tuple[Role, int | None]],
        on_pdu: Callable[[RsproPdu], None],
        on_connected: Callable[[], None],
        on_lost: Callable[[], None],
    ) -> RsproLink:
        """A link to the peer ``certified()`` names (with TLS, its certificate must)."""

        def accept_peer(ssl_object: Any) -> str | None:
            return refusal(PeerIdentity.from_peer(ssl_object), *certified())

        tls = self.security.client_context is not None
        return RsproLink(
            name=name,
            connect_req=self._connect_req,
            peer_type=peer_type,
            on_pdu=on_pdu,
            on_connected=on_connected,
            on_lost=on_lost,
            keepalive=self.config.keepalive,
            ssl=self.security.client_context,
            accept_peer=accept_peer if tls else None,
        )

    # --- carrying out actions ----------------------------------------------------------------

    def _feed(self, actions: list[Action]) -> None:
        if self._closed:
            return
        self._pending.extend(actions)
        if self._busy:
            return  # re-entered from a hook or a link: the outer loop picks these up
        self._busy = True
        try:
            while self._pending:
                action = self._pending.popleft()
                try:
                    self._execute(action)
                except Exception:
                    log.exception("carrying out %s failed", action)
        finally:
            self._busy = False

    def _execute(self, action: Action) -> None:
        assert self._server is not None and self._bankd is not None
        fe = self.frontend
        match action:
            case SendToBankd(msg):
                self._bankd_sent = self._bankd.send(msg)
            case CardToModem(data):
                fe.card_to_modem(data)
            case SendToServer(msg):
                self._server.send(msg)
            case ConnectBankd(host, port):
                self._bankd.establish(host, port)
            case DisconnectBankd():
                self._bankd.disconnect()
            case SetAtr(atr):
                fe.set_atr(atr)
            case SimRemote():
                fe.sim_remote()
            case SimLocal():
                fe.sim_local()
            case CardInsert():
                fe.card_insert()
            case CardRemove():
                fe.card_remove()
            case ModemReset():
                fe.modem_reset()
            case BankSlotStatus(status):
                fe.bank_slot_status(status)
            case RunScript(cause):
                self._run_script(cause)

    def _run_script(self, cause: Cause | str) -> None:
        if self.script is None:
            return
        fsm = self.fsm
        env = remsim_env(
            version=self.config.sw_version,
            server_host=self.config.server_host,
            server_port=self.config.server_port,
            server_state=self.server_state.value,
            bankd_host=fsm.bankd_host,
            bankd_port=fsm.bankd_port,
            bankd_state=self.bankd_state.value,
            client_slot=fsm.client_slot,
            bank_slot=fsm.bank_slot,
            modem_status=fsm.modem_status_last,
            cause=str(cause),
        )
        env.update(self.frontend.script_env())
        self.script.run(str(cause), env)
