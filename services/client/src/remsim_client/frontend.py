"""The modem side of a client: what the core asks of a front-end, and what it offers back.

A front-end plays the modem (or the application) that uses the remote card: the SIMtrace2
card emulator, the shell's stdin/stdout, a vpcd reader, the ``RemoteCard`` API. The core
calls the hooks of :class:`ModemFrontend` (client.md §4); the front-end feeds the modem's
TPDUs and status into the core through :class:`ModemCore`, which the client hands it with
:meth:`ModemFrontend.attach` before anything else happens.

Every hook is called on the event loop and must not block. Hooks other than
:meth:`~ModemFrontend.set_atr` and :meth:`~ModemFrontend.card_to_modem` default to doing
nothing, which is what the shell does.

APDU mode (remsim's, with a bankd of ours): a front-end with :attr:`ModemFrontend.whole_apdus`
hands the core whole C-APDUs (:meth:`ModemCore.modem_apdu`, short or extended, one round
trip each) while :attr:`ModemFrontend.apdu_mode` is set, and gets each answer through
:meth:`~ModemFrontend.card_to_modem` or :meth:`~ModemFrontend.card_error`.
"""

from __future__ import annotations

import abc
import logging
from typing import ClassVar, Protocol

from rspro import ResultCode, SlotPhysStatus

__all__ = ["POWER_OFF", "POWER_ON", "ModemCore", "ModemFrontend"]

log = logging.getLogger("remsim.client")

POWER_OFF = SlotPhysStatus(
    reset_active=True, vcc_present=False, clk_active=False, card_present=True
)
"""Card powered down (RST active, no VCC/CLK): the bankd cold-resets the card on this edge."""
POWER_ON = SlotPhysStatus(reset_active=False, vcc_present=True, clk_active=True, card_present=True)
"""Card powered and running."""


class ModemCore(Protocol):
    """What a front-end may call on the client core (accepted only while OPERATIONAL)."""

    def modem_tpdu(self, data: bytes) -> bool:
        """A complete command TPDU/APDU from the modem (5..260 bytes) for the card.

        False if it did not go out (no card in use, or the bankd link is down): its answer
        will never come.
        """

    def modem_apdu(self, capdu: bytes) -> bool:
        """A whole command APDU (short or extended, ``rspro.MIN_APDU..MAX_APDU`` bytes) for
        the card; only while the bankd link is in APDU mode (``ModemFrontend.apdu_mode``).

        Its answer comes as :meth:`ModemFrontend.card_to_modem` (the R-APDU) or
        :meth:`ModemFrontend.card_error`. False if it did not go out, as for modem_tpdu.
        """

    def modem_status(self, status: SlotPhysStatus) -> None:
        """The modem's electrical state of the SIM interface (RST, VCC, CLK, card present).

        ``None`` in a field means the front-end cannot tell; that flag is not sent.
        """

    def modem_pts(self, pts: bytes) -> None:
        """A PTS/PPS request from the modem (logged only, as the original does)."""

    def frontend_event(self, cause: str) -> None:
        """Run the event script for an event of the front-end's own, with the usual
        environment (st2: ``event-atr-rejected``, an ATR the card emulator cannot take)."""


class ModemFrontend(abc.ABC):
    """The hooks the client core calls, in the order of client.md §6.3.

    Entering OPERATIONAL (bankd link up): :meth:`sim_remote`, :meth:`set_atr` with the
    configured ATR, :meth:`card_insert`, :meth:`modem_reset`; the bankd's ATR follows with
    another :meth:`set_atr`. Leaving OPERATIONAL: :meth:`card_remove`, :meth:`sim_local`,
    :meth:`modem_reset`.
    """

    core: ModemCore | None = None
    whole_apdus: ClassVar[bool] = False
    """Whether this front-end sends whole C-APDUs in APDU mode (RemoteCard, shell, vpcd):
    only for such a front-end does the client offer the bankd APDU mode. False (st2): its
    modem speaks T=0 TPDUs, the link stays in TPDU mode."""
    apdu_mode: bool = False
    """The bankd link is in APDU mode (set by :meth:`set_apdu_mode`)."""

    def attach(self, core: ModemCore) -> None:
        """Called once by the client: from now on modem events go to ``core``."""
        self.core = core

    @abc.abstractmethod
    def set_atr(self, atr: bytes) -> None:
        """Present this ATR to the modem from now on."""

    @abc.abstractmethod
    def card_to_modem(self, data: bytes) -> None:
        """The card's response (response data + SW1 SW2) to the last modem TPDU."""

    def card_error(self, result: ResultCode, error: str | None) -> None:
        """APDU mode: the bankd got no R-APDU for the last C-APDU (``result`` says why, e.g.
        CARD_UNRESPONSIVE; ``error`` is its text, if any). The exchange is over."""
        log.error("the card did not answer the APDU: %s%s", result.name,
                  f" ({error})" if error else "")  # fmt: skip

    def set_apdu_mode(self, apdu_mode: bool) -> None:
        """True entering OPERATIONAL on a bankd link in APDU mode (before :meth:`set_atr`
        and :meth:`card_insert`), False after leaving it; never called in TPDU mode."""
        self.apdu_mode = apdu_mode

    def sim_remote(self) -> None:
        """Switch the modem to the remote (emulated) SIM."""
        return None

    def sim_local(self) -> None:
        """Switch the modem back to its local SIM."""
        return None

    def card_insert(self) -> None:
        """Signal card insertion to the modem."""
        return None

    def card_remove(self) -> None:
        """Signal card removal to the modem (the bankd link is gone or was unconfigured)."""
        return None

    def modem_reset(self) -> None:
        """Pulse the modem's reset line."""
        return None

    def bank_slot_status(self, status: SlotPhysStatus) -> None:
        """A BankSlotStatusInd from the bankd (never sent by the original bankd)."""
        return None

    def script_env(self) -> dict[str, str]:
        """Extra variables for the event script (st2: REMSIM_USB_PATH, REMSIM_USB_INTERFACE)."""
        return {}
