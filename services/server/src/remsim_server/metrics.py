"""The control core's metric families, in a registry of their own.

- ``remsim_connections{role, state}`` (gauge): the RSPRO control connections this core
  holds, by the peer's role (``bankd``, ``client``; ``unidentified`` until it says who it
  is) and state (as REST shows it, e.g. ``CONNECTED_BANKD``).
- ``remsim_keepalive_timeouts_total{link}`` (counter): control connections lost to an
  unanswered IPA PING, by the peer (``bankd``, ``client``).

The core never sees card traffic, so there are no TPDU families here. ``remsim-server``
shows these next to the REST API's (``remsim_api.metrics``): ``exposition()``.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from remsim_api import metrics as api_metrics
from remsim_common import component_registry, distribution_version
from remsim_common import exposition as process_exposition

__all__ = ["CONNECTIONS", "KEEPALIVE_TIMEOUTS", "LINKS", "REGISTRY", "exposition"]

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
for _link in LINKS:  # series from the start, so that rate() and alerts see zeros
    KEEPALIVE_TIMEOUTS.labels(_link)


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
