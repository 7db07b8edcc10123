"""The control core's metric families, in a registry of their own.

- ``remsim_connections{role, state}`` (gauge): the RSPRO control connections this core
  holds, by the peer's role (``bankd``, ``client``; ``unidentified`` until it says who it
  is) and state (as REST shows it, e.g. ``CONNECTED_BANKD``).
- ``remsim_keepalive_timeouts_total{link}`` (counter): control connections lost to an
  unanswered IPA PING, by the peer (``bankd``, ``client``).
- ``remsim_peer_errors_total{cause}`` (counter): what peers did wrong (``PEER_ERRORS``):
  bytes that are no RSPRO PDU (``undecodable``), a broken IPA stream (``framing``), a
  message not expected in the connection's state (``unexpected``), no connect request in
  time (``no_identification``), a failed TLS handshake (``tls``). Logged at most once per
  interval and cause.
- ``remsim_connections_refused_total{limit}`` (counter): connections refused at once for
  being over a limit: too many on the port (``port``), from the address (``address``), or
  on all ports together for the file descriptor limit (``total``).

The core never sees card traffic, so there are no TPDU families here. ``remsim-server``
shows these next to the REST API's (``remsim_api.metrics``): ``exposition()``.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from remsim_api import metrics as api_metrics
from remsim_common import component_registry, distribution_version
from remsim_common import exposition as process_exposition

__all__ = [
    "CONNECTIONS",
    "CONNECTIONS_REFUSED",
    "KEEPALIVE_TIMEOUTS",
    "LINKS",
    "PEER_ERRORS",
    "REGISTRY",
    "exposition",
]

LINKS = ("bankd", "client")
"""``link`` label values: the peer at the other end of a control connection."""

REGISTRY = component_registry()

CONNECTIONS = Gauge(
    "remsim_connections",
    "RSPRO control connections held, by peer role and state.",
    ["role", "state"],
    registry=REGISTRY,
)
KEEPALIVE_TIMEOUTS = Counter(
    "remsim_keepalive_timeouts",
    "RSPRO control connections lost to an unanswered IPA PING, by peer.",
    ["link"],
    registry=REGISTRY,
)
PEER_ERRORS = Counter(
    "remsim_peer_errors",
    "Errors of RSPRO control peers (bad bytes, unexpected messages, no identification).",
    ["cause"],
    registry=REGISTRY,
)
CONNECTIONS_REFUSED = Counter(
    "remsim_connections_refused",
    "RSPRO control connections refused at once, by the limit they were over.",
    ["limit"],
    registry=REGISTRY,
)
PEER_ERROR_CAUSES = ("undecodable", "framing", "unexpected", "no_identification", "tls")
"""``cause`` label values of ``remsim_peer_errors_total``."""
LIMITS = ("port", "address", "total")
"""``limit`` label values of ``remsim_connections_refused_total``."""

# series from the start, so that rate() and alerts see zeros
for _link in LINKS:
    KEEPALIVE_TIMEOUTS.labels(_link)
for _cause in PEER_ERROR_CAUSES:
    PEER_ERRORS.labels(_cause)
for _limit in LIMITS:
    CONNECTIONS_REFUSED.labels(_limit)


def set_connections(counts: Mapping[tuple[str, str], int]) -> None:
    """The connections by (role, state) now; series not in ``counts`` disappear."""
    CONNECTIONS.clear()
    for (role, state), count in counts.items():
        CONNECTIONS.labels(role, state).set(count)


def exposition() -> CollectorRegistry:
    """``/metrics`` of a ``remsim-server`` process: the core's families and its embedded
    API's, the process's, one ``remsim_build_info``."""
    return process_exposition(
        "remsim-server", distribution_version("remsim-server"), REGISTRY, api_metrics.REGISTRY
    )
