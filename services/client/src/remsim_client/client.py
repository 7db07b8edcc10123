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

APDU mode (``ClientConfig.apdu_mode``, ``config.ApduMode``): the connectClientReq on the
bankd link offers it (``features=RemsimFeatures(apdu=True)``) when the front-end sends
whole APDUs and the setting is ``on``, or ``auto`` and the bankd link is TLS with a
certificate naming our bankd (which an original bankd cannot have: it speaks no TLS).
Never on the server link; without the offer every byte is the original's. The link is in
APDU mode when the bankd's connectClientRes accepts the offer; logged at every connect.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

from remsim_common import PeerIdentity, TransportSecurity
from remsim_common.transport import Role
from rspro import (
    ComponentType,
    ConnectClientReq,
    Message,
    RemsimFeatures,
    RsproPdu,
    SlotPhysStatus,
)
from rspro.link import LinkState, RsproLink

from .config import ApduMode, ClientConfig, atr_protocols
from .frontend import ModemFrontend
from .main_fsm import (
    Action,
    BankSlotStatus,
    CardError,
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
    SetApduMode,
    SetAtr,
    SimLocal,
    SimRemote,
)
from .script import ScriptRunner, remsim_env

log = logging.getLogger("remsim.client")

APDU_FEATURES = RemsimFeatures(apdu=True)
"""What the client offers a bankd of ours: remsim's APDU mode."""


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
        self._verified: dict[str, bool] = {}  # per link: TLS peer certified as expected
        self._apdu_offered = False  # the bankd link's last connectClientReq offered it
        frontend.attach(self)

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Create both links and start connecting to the server."""
        if self._server is not None:
            return
        fsm = self.fsm
        if ApduMode(self.config.apdu_mode) is ApduMode.ON and not self.frontend.whole_apdus:
            log.warning("--apdu-mode on: this front-end speaks T=0 TPDUs only, TPDU mode")
        self._server = self._link(
            "server",
            ComponentType.REMSIM_SERVER,
            certified=lambda: ("server", None),
            connect_req=self._connect_req,
            on_pdu=lambda pdu: self._feed(fsm.server_message(pdu.msg)),
            on_connected=lambda: self._feed(fsm.server_connected()),
            on_lost=lambda: self._feed(fsm.server_lost()),
        )
        self._bankd = self._link(
            "bankd",
            ComponentType.REMSIM_BANKD,
            certified=lambda: ("bankd", fsm.bank_slot.bank_id),
            connect_req=self._bankd_connect_req,
            on_pdu=lambda pdu: self._feed(fsm.bankd_message(pdu.msg)),
            on_connected=self._bankd_connected,
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

    @property
    def apdu_mode(self) -> bool:
        """The bankd link is up in APDU mode (the card in use takes whole APDUs)."""
        return self.fsm.apdu_mode

    # --- ModemCore: events from the front-end ------------------------------------------------

    def modem_tpdu(self, data: bytes) -> bool:
        return self._to_bankd(self.fsm.modem_tpdu(data))

    def modem_apdu(self, capdu: bytes) -> bool:
        return self._to_bankd(self.fsm.modem_apdu(capdu))

    def _to_bankd(self, actions: list[Action]) -> bool:
        """Carry out a modem event's [SendToBankd(...)]; whether it went out."""
        if not actions or self._closed:
            return False
        if self._busy:  # re-entered from a hook: it goes out after the actions under way
            self._feed(actions)
            return True
        self._bankd_sent = False
        self._feed(actions)  # [SendToBankd(pdu)], carried out right here
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

    def _offers_apdu(self) -> bool:
        if not self.frontend.whole_apdus:
            return False
        mode = ApduMode(self.config.apdu_mode)
        return mode is ApduMode.ON or (mode is ApduMode.AUTO and self._verified.get("bankd", False))

    def _bankd_connect_req(self) -> ConnectClientReq:
        self._apdu_offered = offer = self._offers_apdu()
        if not offer:
            return self._connect_req()
        return ConnectClientReq(self._identity, self.fsm.client_slot, features=APDU_FEATURES)

    def _bankd_connected(self) -> None:
        assert self._bankd is not None
        features = self._bankd.features
        apdu = self._apdu_offered and features is not None and features.apdu is True
        if self._apdu_offered and not apdu:
            log.info("bankd link in TPDU mode (the bankd declined the APDU mode)")
        else:
            log.info("bankd link in %s mode", "APDU" if apdu else "TPDU")
        self._feed(self.fsm.bankd_connected(apdu_mode=apdu))

    def _link(
        self,
        name: str,
        peer_type: ComponentType,
        *,
        certified: Callable[[], tuple[Role, int | None]],
        connect_req: Callable[[], Message],
        on_pdu: Callable[[RsproPdu], None],
        on_connected: Callable[[], None],
        on_lost: Callable[[], None],
    ) -> RsproLink:
        """A link to the peer ``certified()`` names (with TLS, its certificate must)."""

        def accept_peer(ssl_object: Any) -> str | None:
            why = refusal(PeerIdentity.from_peer(ssl_object), *certified())
            self._verified[name] = why is None and ssl_object is not None
            return why

        tls = self.security.client_context is not None
        return RsproLink(
            name=name,
            connect_req=connect_req,
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
            case CardError(result, error):
                fe.card_error(result, error)
            case SendToServer(msg):
                self._server.send(msg)
            case ConnectBankd(host, port):
                self._bankd.establish(host, port)
            case DisconnectBankd():
                self._bankd.disconnect()
            case SetAtr(atr):
                if not fe.whole_apdus and 0 not in (offered := atr_protocols(atr)):
                    log.warning(
                        "the ATR %s offers no T=0 (only T=%s), but this front-end's modem "
                        "speaks T=0 TPDUs (SIMtrace2 firmware: T=0 only): it may refuse the card",
                        atr.hex(),
                        ",".join(map(str, sorted(offered))),
                    )
                fe.set_atr(atr)
            case SetApduMode(apdu_mode):
                fe.set_apdu_mode(apdu_mode)
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
