"""The st2 modem front-end: a SIMtrace2 cardem slot as the client core's ModemFrontend.

The core calls the hooks of :class:`~remsim_client.frontend.ModemFrontend` on the event
loop; each queues its USB message(s) and returns at once (a single writer thread keeps them
in call order). :meth:`St2Frontend.run` feeds the modem's side into the attached core:
complete command TPDUs (``modem_tpdu``), VCC/CLK/RST changes (``modem_status``) and PPS
(``modem_pts``). Procedure bytes that only collect command data are answered right here,
without a round trip through the core.

    frontend = await St2Frontend.open(selector, presence_high=None)
    async with Client(config, frontend):
        await frontend.run()      # raises DeviceGone when the board is unplugged
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rspro import SlotPhysStatus

from ..frontend import ModemFrontend
from .protocol import (
    FEATURE_STATUS_IRQ,
    MAX_ATR_LEN,
    PRES_POL_PRES_H,
    PRES_POL_VALID,
    CardInsert,
    Config,
    ModemReset,
    Pts,
    ResetAction,
    RxData,
    SetAtr,
    SimSelect,
    Status,
    StatusFlags,
)
from .tpdu import ForwardTpdu, TpduAssembler
from .usb import CardemTransport, Incoming, Selector, open_cardem

__all__ = [
    "ATR_REJECTED",
    "MODEM_RESET_PULSE_MS",
    "St2Frontend",
    "phys_status",
    "presence_config",
]

log = logging.getLogger("remsim.client.st2")

#: Upstream always pulses the modem's reset line for this long.
MODEM_RESET_PULSE_MS = 300
#: Event-script cause: an ATR the firmware would ignore (over 33 bytes) was not sent.
ATR_REJECTED = "event-atr-rejected"


def phys_status(status: Status) -> SlotPhysStatus:
    """A STATUS as ClientSlotStatusInd wants it: flags normalised to booleans (upstream
    passes the raw bits 0x10/0x01/0x02 on); card presence is not reported by the firmware."""
    flags = status.flags
    return SlotPhysStatus(
        reset_active=bool(flags & StatusFlags.RESET_ACTIVE),
        vcc_present=bool(flags & StatusFlags.VCC_PRESENT),
        clk_active=bool(flags & StatusFlags.CLK_ACTIVE),
        card_present=None,
    )


def presence_config(presence_high: bool | None) -> int:
    """CONFIG's pres_pol byte for ``-Z``: None = leave the firmware's polarity alone."""
    if presence_high is None:
        return 0
    return PRES_POL_VALID | (PRES_POL_PRES_H if presence_high else 0)


class St2Frontend(ModemFrontend):
    """One card-emulation slot (USB interface) as the client's modem front-end."""

    def __init__(self, transport: CardemTransport, *, presence_high: bool | None = None) -> None:
        self.transport = transport
        self._presence_high = presence_high
        self._tpdu = TpduAssembler()

    @classmethod
    async def open(
        cls,
        selector: Selector | None = None,
        *,
        backend: Any = None,
        presence_high: bool | None = None,
    ) -> St2Frontend:
        """Select and open the device (client.md §10 steps 2-6) and configure the firmware.

        Raises SelectionError or DeviceError (both St2Error) when that is not possible.
        """
        device = await asyncio.to_thread(open_cardem, selector or Selector(), backend)
        transport = CardemTransport(device)
        frontend = cls(transport, presence_high=presence_high)
        try:
            await frontend.start()
        except BaseException:
            await transport.aclose()
            raise
        return frontend

    async def start(self) -> None:
        self.transport.start()
        log.info("using USB device %s interface %d", self.usb_path, self.usb_interface)
        # STATUS on the interrupt endpoint is what turns into ClientSlotStatusInd.
        config = Config(FEATURE_STATUS_IRQ, 0, presence_config(self._presence_high))
        # CONFIG first, and twice: after a restart the first packet on each bulk endpoint
        # may be lost (SET_INTERFACE's STALL resets the host's data toggles, not the
        # firmware's). Then what is lost is a CONFIG or a CONFIG answer, whichever of the
        # two endpoints lost one, and never a command or a TPDU. (Both take the same
        # values, so the firmware ends up the same whether it saw one or two.)
        await self.transport.send(config, config)

    async def drain(self) -> None:
        """Wait until the messages of every hook called so far are on the USB."""
        await self.transport.drain()

    async def aclose(self) -> None:
        """Stop once the hooks' messages are written; :meth:`run` returns."""
        await self.transport.aclose()

    @property
    def usb_path(self) -> str:
        return self.transport.device.path

    @property
    def usb_interface(self) -> int:
        return self.transport.device.interface

    # hooks called by the client core -------------------------------------------------

    def sim_remote(self) -> None:
        self.transport.submit(SimSelect(True))

    def sim_local(self) -> None:
        self._tpdu.abort()  # emulation stops: a late response must not reach the modem
        self.transport.submit(SimSelect(False))

    def set_atr(self, atr: bytes) -> None:
        if len(atr) > MAX_ATR_LEN:
            # The firmware would silently keep its previous ATR: say so instead.
            log.error(
                "ATR %s has %d bytes, the card emulator takes at most %d: not sent, the "
                "modem keeps the previous ATR",
                atr.hex(),
                len(atr),
                MAX_ATR_LEN,
            )
            if self.core is not None:
                self.core.frontend_event(ATR_REJECTED)
            return
        self.transport.submit(SetAtr(atr))

    def card_insert(self) -> None:
        self.transport.submit(CardInsert(True))

    def card_remove(self) -> None:
        self.transport.submit(CardInsert(False))

    def modem_reset(self) -> None:
        self.transport.submit(ModemReset(ResetAction.PULSE, MODEM_RESET_PULSE_MS))

    def card_to_modem(self, data: bytes) -> None:
        """The bankd's R-APDU for the pending TPDU: procedure byte + data, then SW."""
        messages = self._tpdu.respond(data)
        if messages:
            self.transport.submit(*messages)

    def script_env(self) -> dict[str, str]:
        return {
            "REMSIM_USB_PATH": self.usb_path,
            "REMSIM_USB_INTERFACE": str(self.usb_interface),
        }

    # the modem's side ----------------------------------------------------------------

    async def run(self) -> None:
        """Feed the modem's events to the core until closed; DeviceError if USB fails."""
        while (incoming := await self.transport.receive()) is not None:
            self._dispatch(incoming)

    def _dispatch(self, incoming: Incoming) -> None:
        match incoming.message:
            case RxData() as rx:
                action = self._tpdu.receive(rx)
                if isinstance(action, ForwardTpdu):
                    if self.core is not None:
                        self.core.modem_tpdu(action.tpdu)
                elif action is not None:  # ACK to collect the command data
                    self.transport.submit(action)
            case Status() as status if incoming.endpoint == "irq":
                log.debug("modem status %r", status)
                flags = status.flags
                if flags & StatusFlags.RESET_ACTIVE or not flags & StatusFlags.VCC_PRESENT:
                    # The firmware dropped the command; so must we, lest a late response
                    # be queued and sent as the answer to the next command. (Bulk and
                    # interrupt IN are two endpoints with no order between them; this
                    # relies on the reset's STATUS overtaking the next TPDU header, which
                    # the ATR in between, tens of milliseconds, makes sure of.)
                    self._tpdu.abort()
                if self.core is not None:
                    self.core.modem_status(phys_status(status))
            case Status() as status:
                log.info("firmware status %r", status)
            case Pts() as pts:
                if self.core is not None:
                    self.core.modem_pts(pts.request)
            case Config() as config:
                log.debug("firmware config %r", config)
            case other:
                log.warning("unknown simtrace msg type %r on %s", other, incoming.endpoint)
