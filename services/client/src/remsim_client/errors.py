"""The exceptions of remsim_client: one base, a few precise kinds."""

from __future__ import annotations

from rspro import ResultCode


class RemsimClientError(Exception):
    """Base of every error raised by the remsim client (the st2 front-end has its own)."""


class ConfigError(RemsimClientError, ValueError):
    """A bad option value, e.g. a malformed ATR."""


class NoCardMappedError(RemsimClientError):
    """The server has no slotmap for this client slot (or it was just removed)."""


class LinkLostError(RemsimClientError, ConnectionError):
    """The link the card depends on is down: server unreachable, bankd unreachable or lost.

    ``link`` names it: ``"server"`` or ``"bankd"``.
    """

    def __init__(self, message: str, link: str) -> None:
        super().__init__(message)
        self.link = link


class CardTimeoutError(RemsimClientError, TimeoutError):
    """No response from the card within the timeout."""


class InvalidApduError(RemsimClientError, ValueError):
    """An APDU the bankd would refuse: TPDU mode, fewer than 4 or more than 260 bytes, or an
    extended one (needs APDU mode); APDU mode, outside ``rspro.MIN_APDU..MAX_APDU`` bytes."""


class CardError(RemsimClientError):
    """APDU mode: the bankd could not get the card's answer (``result``: e.g.
    ``CARD_UNRESPONSIVE``, ``CARD_NOT_PRESENT``, ``CARD_TRANSMISSION_ERROR``)."""

    def __init__(self, message: str, result: ResultCode) -> None:
        super().__init__(message)
        self.result = result
