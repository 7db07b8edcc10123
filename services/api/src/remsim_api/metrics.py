"""The REST API's metric families, in a registry of their own.

- ``remsim_http_refused_total{cause}`` (counter): requests the HTTP layer refused
  (``body-too-large``, ``malformed-http``, ``request-timeout``, and ``connections``:
  a connection over the process's cap, closed at once: ``remsim_api.limits``).
- ``remsim_slotmaps{state}`` (gauge): the slotmaps in the store by state (``NEW``,
  ``UNACKNOWLEDGED``, ``ACTIVE``, ``DELETE_REQ``, ``DELETING``), read from the store before
  each scrape (``count_slotmaps``). With a shared store every API process and core shows the
  same numbers: take ``max`` over them.

``exposition()`` is what ``/metrics`` of a ``remsim-api`` process shows; ``remsim-server``
shows these families next to its own (``remsim_server.metrics``).
"""

from __future__ import annotations

import collections

from prometheus_client import CollectorRegistry, Counter, Gauge

from remsim_common import component_registry, distribution_version
from remsim_common import exposition as process_exposition
from remsim_control import SlotmapState, Store

__all__ = ["HTTP_REFUSED", "REGISTRY", "SLOTMAPS", "count_slotmaps", "exposition"]

REGISTRY = component_registry()

SLOTMAPS = Gauge(
    "remsim_slotmaps", "Slotmaps in the store, by state.", ["state"], registry=REGISTRY
)
for _state in SlotmapState:  # every state shows, 0 included
    SLOTMAPS.labels(_state.value)

HTTP_REFUSED = Counter(
    "remsim_http_refused",
    "REST requests refused by the HTTP layer's limits, by cause.",
    ["cause"],
    registry=REGISTRY,
)
for _cause in ("body-too-large", "malformed-http", "request-timeout", "connections"):
    HTTP_REFUSED.labels(_cause)


async def count_slotmaps(store: Store) -> None:
    """``remsim_slotmaps`` from what ``store`` holds now."""
    counts = collections.Counter(slotmap.state for slotmap in await store.list_slotmaps())
    for state in SlotmapState:
        SLOTMAPS.labels(state.value).set(counts[state])


def exposition() -> CollectorRegistry:
    """``/metrics`` of a ``remsim-api`` process: these families, the process's, one
    ``remsim_build_info``."""
    return process_exposition("remsim-api", distribution_version("remsim-api"), REGISTRY)
