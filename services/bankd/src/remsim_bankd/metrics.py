"""The bankd's metric families, in a registry of its own (``REGISTRY``).

- ``remsim_connections{role, state}`` (gauge): the control link (``role="server"``, its link
  state) and the client connections (``role="client"``, by session state), set at scrape time.
- ``remsim_slotmaps{state}`` (gauge): the maps in the bankd's own mapping table; a map the
  bankd holds is ``ACTIVE`` (the only state it knows), set at scrape time.
- ``remsim_tpdus_relayed_total{direction}`` (counter): ``modem_to_card`` TPDUs given to a
  card, ``card_to_modem`` answers sent back. In APDU mode an ApduModemToCard and its
  ApduCardToModem count one each, however many TPDUs the card took (T=0's GET RESPONSEs).
- ``remsim_tpdu_roundtrip_seconds`` (histogram): a TPDU's card transmit time (an APDU's: the
  whole exchange with the card).
- ``remsim_reconnects_total{link="server"}`` (counter): the control link registered again
  after having been registered.
- ``remsim_keepalive_timeouts_total{link}`` (counter): the control link (``server``) or a
  client connection (``client``) lost to an unanswered PING.
- ``remsim_connections_refused_total{cause}`` (counter): client connections closed at once,
  over a limit: ``port`` (connections on the client port), ``host`` (from one address),
  ``fds`` (no file descriptor left to accept); and ``identify_timeout``: closed for sending
  no connectClientReq in time.

The TPDU path counts in the client connection's own thread (about 1.5 µs a TPDU).
``remsim_common.exposition`` adds the process collectors and ``remsim_build_info``.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from remsim_common import component_registry

__all__ = [
    "ACTIVE",
    "CLIENT_KEEPALIVE_TIMEOUTS",
    "CONNECTIONS",
    "KEEPALIVE_TIMEOUTS",
    "RECONNECTS",
    "REFUSED",
    "REGISTRY",
    "SERVER_KEEPALIVE_TIMEOUTS",
    "SERVER_LINK",
    "SERVER_RECONNECTS",
    "SLOTMAPS",
    "TO_CARD",
    "TO_MODEM",
    "TPDUS_RELAYED",
    "TPDU_ROUNDTRIP",
    "TPDU_ROUNDTRIP_BUCKETS",
    "set_connections",
    "set_slotmaps",
]

REGISTRY = component_registry()

TPDU_ROUNDTRIP_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
"""From a software SIM's ~100 µs to a slow card's seconds."""

SERVER_LINK = "server"
"""The ``link`` label of the control link, the bankd's only outgoing RSPRO link."""

ACTIVE = "ACTIVE"
"""The ``state`` of a map in the bankd's table (the server's name for a map in use)."""

CONNECTIONS = Gauge(
    "remsim_connections",
    "RSPRO connections held, by peer role and state.",
    ["role", "state"],
    registry=REGISTRY,
)
SLOTMAPS = Gauge(
    "remsim_slotmaps", "Slotmaps in the bankd's mapping table, by state.", ["state"],
    registry=REGISTRY,
)  # fmt: skip
TPDUS_RELAYED = Counter(
    "remsim_tpdus_relayed",
    "TPDUs relayed between modem and card.",
    ["direction"],
    registry=REGISTRY,
)
TPDU_ROUNDTRIP = Histogram(
    "remsim_tpdu_roundtrip_seconds",
    "Time from a TPDU towards the card until the card's answer.",
    buckets=TPDU_ROUNDTRIP_BUCKETS,
    registry=REGISTRY,
)
RECONNECTS = Counter(
    "remsim_reconnects",
    "RSPRO links re-established after a loss, by peer.",
    ["link"],
    registry=REGISTRY,
)
KEEPALIVE_TIMEOUTS = Counter(
    "remsim_keepalive_timeouts",
    "RSPRO links lost to an unanswered IPA PING, by peer.",
    ["link"],
    registry=REGISTRY,
)

REFUSED = Counter(
    "remsim_connections_refused",
    "Client connections closed at once (over a limit) or unidentified in time, by cause.",
    ["cause"],
    registry=REGISTRY,
)

# Series that exist from the start, so that rate() and alerts see zeros.
TO_CARD = TPDUS_RELAYED.labels("modem_to_card")
TO_MODEM = TPDUS_RELAYED.labels("card_to_modem")
SERVER_RECONNECTS = RECONNECTS.labels(SERVER_LINK)
SERVER_KEEPALIVE_TIMEOUTS = KEEPALIVE_TIMEOUTS.labels(SERVER_LINK)
CLIENT_KEEPALIVE_TIMEOUTS = KEEPALIVE_TIMEOUTS.labels("client")
for _cause in ("port", "host", "fds", "identify_timeout"):
    REFUSED.labels(_cause)
SLOTMAPS.labels(ACTIVE).set(0)


def set_connections(server_state: str | None, client_states: Iterable[str]) -> None:
    """The connections now: the control link's state (None: no control link) and the state
    of every client session; series not given disappear."""
    CONNECTIONS.clear()
    if server_state is not None:
        CONNECTIONS.labels(SERVER_LINK, server_state).set(1)
    for state, count in collections.Counter(client_states).items():
        CONNECTIONS.labels("client", state).set(count)


def set_slotmaps(active: int) -> None:
    """The number of maps in the bankd's mapping table now."""
    SLOTMAPS.labels(ACTIVE).set(active)
