"""The ``Store`` interface: slotmaps, the registry of connected banks and clients, and the
configuration each client was last given.

Every method is atomic on its own (a Redis implementation uses a transaction or a script per
call). Writers that race use the compare-and-set methods (``update_slotmap``,
``remove_slotmap``): whoever finds the expected state wins, the other gets ``None`` and
re-reads. Values handed out are frozen models, never the store's own state.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from remsim_control.audit import AuditEntry, AuditQuery
from remsim_control.models import (
    BankRecord,
    BankSlot,
    CardRecord,
    ClientConfig,
    ClientRecord,
    ClientSlot,
    Slotmap,
    SlotmapState,
)


class Store(Protocol):
    # --- slotmaps ---------------------------------------------------------------------

    async def create_slotmap(
        self, bank: BankSlot, client: ClientSlot, iccid: str | None = None
    ) -> Slotmap:
        """Add a ``NEW`` map with a fresh serial; ``iccid``: the card it is made for (the
        map follows that card to another slot).

        Raises ``SlotInUse`` if a visible map (NEW, UNACKNOWLEDGED, ACTIVE) uses the same
        bank slot or the same client slot; maps being deleted do not block.
        """
        ...

    async def get_slotmap(self, slotmap_id: int) -> Slotmap | None:
        """The visible map whose id (``bankId << 16 | slotNr``) is ``slotmap_id``."""
        ...

    async def list_slotmaps(
        self,
        *,
        bank_id: int | None = None,
        client: ClientSlot | None = None,
        bank_slots: Collection[BankSlot] | None = None,
        visible_only: bool = False,
    ) -> list[Slotmap]:
        """Maps in creation order, in every state unless ``visible_only``; optionally only
        those of one bank, of one client slot, or at the ``bank_slots`` given. One client
        slot's or a few bank slots' maps are found by an index, without looking at the
        others (a connection re-reads them on every event)."""
        ...

    async def request_removal(self, slotmap_id: int) -> Slotmap | None:
        """Ask for the visible map ``slotmap_id`` to go: a ``NEW`` map is removed at once
        (no bankd holds it), an ``UNACKNOWLEDGED`` or ``ACTIVE`` one becomes ``DELETE_REQ``
        (hidden). Returns the map as it was before, or ``None`` if there is no such map."""
        ...

    async def move_slotmap(
        self, serial: int, expected: Collection[SlotmapState], bank: BankSlot
    ) -> tuple[Slotmap, Slotmap] | None:
        """A map follows its card to ``bank``, in one step: if map ``serial`` is visible and
        in one of the ``expected`` states, it goes as with ``request_removal`` (``NEW``:
        removed at once; ``UNACKNOWLEDGED``/``ACTIVE``: ``DELETE_REQ``, so that its bankd is
        sent ``removeMappingReq``) and a ``NEW`` map with a fresh serial is made at ``bank``
        for the same client slot, with the same ICCID. Returns (the old map as it was, the
        new map), or ``None`` (nothing changed) if map ``serial`` is gone, hidden or in
        another state.

        Raises ``SlotInUse`` (nothing changed) if a visible map uses ``bank`` (the map
        itself too, if it is there already) or another visible map uses its client slot.
        """
        ...

    async def update_slotmap(
        self,
        serial: int,
        expected: Collection[SlotmapState],
        state: SlotmapState,
        *,
        result: str | None = None,
    ) -> Slotmap | None:
        """Compare-and-set: if map ``serial`` exists and is in one of the ``expected``
        states, set its ``state`` and ``result`` and return the updated map; else ``None``.
        Moving a map out of a visible state never conflicts with other maps; moving a
        hidden map back to a visible state is not allowed (``ValueError``)."""
        ...

    async def remove_slotmap(
        self, serial: int, expected: Collection[SlotmapState]
    ) -> Slotmap | None:
        """Compare-and-delete: remove map ``serial`` if it is in one of the ``expected``
        states and return it as it was; else ``None``."""
        ...

    async def release_bank(self, record: BankRecord) -> list[Slotmap] | None:
        """A bank's connection ended: if ``record`` is still the bank's registry entry (no
        other connection took the bank over meanwhile), its maps wait for the bank's next
        connection: ``UNACKNOWLEDGED``/``ACTIVE`` become ``NEW`` and maps being deleted
        (``DELETE_REQ``/``DELETING``) are removed, all in one step. Returns the maps changed
        as they were before, or ``None`` (nothing changed) if the bank is registered by
        another connection or by none."""
        ...

    async def release_orphans(self) -> list[Slotmap]:
        """As ``release_bank``, for every bank that has no live registry entry (its core
        died and its lease lapsed, and the bank did not come back). Returns the maps changed
        as they were before."""
        ...

    # --- registry of identified connections --------------------------------------------

    async def register_bank(self, record: BankRecord) -> None:
        """Raises ``IdentityInUse`` if a bank with the same id is registered."""
        ...

    async def unregister_bank(self, record: BankRecord) -> bool:
        """Remove the bank's entry if it is exactly ``record`` (so a late unregister of an
        old connection never removes a newer one). True if removed. A store that cannot be
        reached raises ``BackendUnavailable`` and carries the unregistration out by itself
        once it can (the connection is gone for good)."""
        ...

    async def get_bank(self, bank_id: int) -> BankRecord | None: ...

    async def list_banks(self) -> list[BankRecord]:
        """Banks in registration order."""
        ...

    async def register_client(self, record: ClientRecord) -> None:
        """Raises ``IdentityInUse`` if a client with the same client slot is registered."""
        ...

    async def unregister_client(self, record: ClientRecord) -> bool:
        """As ``unregister_bank``."""
        ...

    async def get_client(self, client: ClientSlot) -> ClientRecord | None: ...

    async def list_clients(self) -> list[ClientRecord]:
        """Clients in registration order."""
        ...

    # --- what each client slot was last configured with ---------------------------------

    async def get_client_config(self, client: ClientSlot) -> ClientConfig | None:
        """The configuration the client acknowledged last, kept across its reconnects."""
        ...

    async def set_client_config(self, client: ClientSlot, config: ClientConfig | None) -> None:
        """Record (or with ``None`` forget) what ``client`` acknowledged."""
        ...

    async def forget_client_config(self, record: ClientRecord) -> bool:
        """Forget what the client acknowledged, but only if ``record`` is still its registry
        entry (a late cleanup of an old connection never touches a newer one's). True if
        forgotten."""
        ...

    # --- the card inventory --------------------------------------------------------------

    async def put_cards(self, bank_id: int, cards: Collection[CardRecord]) -> None:
        """Replace everything known of bank ``bank_id``'s slots by ``cards`` (its bankd's
        latest report, every slot of the bank). A card is in one place: a record elsewhere
        with the ICCID of one of ``cards`` (the card moved from another bank) is dropped."""
        ...

    async def cards(self) -> list[CardRecord]:
        """The inventory, by bank slot (bank id, then slot number). Entries stay after their
        bankd disconnects (``last_seen`` tells how old they are)."""
        ...

    async def card(self, iccid: str) -> CardRecord | None:
        """The bank slot holding the card ``iccid``, if any."""
        ...

    # --- the audit log (remsim_control.audit) ---------------------------------------------

    async def add_audit(self, entry: AuditEntry) -> AuditEntry:
        """Append ``entry``; returns it with its ``seq`` assigned."""
        ...

    async def list_audit(self, query: AuditQuery) -> list[AuditEntry]:
        """Entries matching ``query``, in ``seq`` order, at most ``query.limit``."""
        ...

    async def prune_audit(self, before: float) -> int:
        """Drop the entries older than ``before`` (epoch seconds); returns how many."""
        ...

    async def close(self) -> None: ...
