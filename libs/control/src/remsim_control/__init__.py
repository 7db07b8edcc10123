"""remsim_control: the control plane shared by the REST API and the server core.

Models (slots, identities, slotmaps, registry records, the audit log), the ``Store`` and
``Bus`` interfaces and their in-memory implementations; the SQLite store (one host, state
kept across restarts) in ``sqlite_store``, Redis and NATS ones in ``redis_store`` and
``nats_bus``, chosen by ``backends.open_backends``.
"""

from remsim_control.audit import AuditEntry, AuditKind, AuditQuery
from remsim_control.bus import Bus, Event, ResetEvent, SlotmapEvent, decode_event, encode_event
from remsim_control.errors import BackendUnavailable, ControlError, IdentityInUse, SlotInUse
from remsim_control.memory_bus import MemoryBus
from remsim_control.memory_store import MemoryStore
from remsim_control.models import (
    SLOT_MAX,
    BankdAddress,
    BankRecord,
    BankSlot,
    CardRecord,
    CardState,
    ClientConfig,
    ClientRecord,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
    Slotmap,
    SlotmapState,
    slotmap_bank,
    slotmap_id,
    valid_id,
)
from remsim_control.store import Store

__all__ = [
    "SLOT_MAX",
    "AuditEntry",
    "AuditKind",
    "AuditQuery",
    "BackendUnavailable",
    "BankRecord",
    "BankSlot",
    "BankdAddress",
    "Bus",
    "CardRecord",
    "CardState",
    "ClientConfig",
    "ClientRecord",
    "ClientSlot",
    "ComponentIdentity",
    "ComponentType",
    "ControlError",
    "Event",
    "IdentityInUse",
    "MemoryBus",
    "MemoryStore",
    "ResetEvent",
    "SlotInUse",
    "Slotmap",
    "SlotmapEvent",
    "SlotmapState",
    "Store",
    "decode_event",
    "encode_event",
    "slotmap_bank",
    "slotmap_id",
    "valid_id",
]
