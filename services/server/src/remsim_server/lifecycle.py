"""The slotmap life cycle's decisions, as pure functions of what the store holds."""

from __future__ import annotations

from collections.abc import Sequence

from remsim_control import BankdAddress, ClientConfig, Slotmap, SlotmapState

NEW, UNACK, ACTIVE = SlotmapState.NEW, SlotmapState.UNACKNOWLEDGED, SlotmapState.ACTIVE
DELETE_REQ, DELETING = SlotmapState.DELETE_REQ, SlotmapState.DELETING


TIMEOUT = "timeout"
"""The ``result`` of a map whose last request its bankd did not answer in time."""


def needs_create(slotmap: Slotmap, retry: bool = False) -> bool:
    """A map its (connected) bankd must be sent: NEW and not refused by this bankd; with
    ``retry`` (the periodic resync) also one whose createMappingReq timed out."""
    return slotmap.state is NEW and (
        slotmap.result is None or (retry and slotmap.result == TIMEOUT)
    )


def needs_remove(slotmap: Slotmap, retry: bool = False) -> bool:
    """A map its bankd must be told to drop; one whose removeMappingReq timed out only
    with ``retry`` (the periodic resync)."""
    return slotmap.state is DELETE_REQ and (slotmap.result is None or retry)


def on_bank_connect(slotmap: Slotmap) -> SlotmapState | None:
    """A bankd (re)connects, or is reset: it holds no map now (it was sent resetStateReq),
    so every map of its bank is pushed again, whatever a previous connection had done with
    it, refused or timed out ones too; a removal that was under way is requested again."""
    if slotmap.state in (UNACK, ACTIVE) or (slotmap.state is NEW and slotmap.result):
        return NEW
    if slotmap.state is DELETING or (slotmap.state is DELETE_REQ and slotmap.result):
        return DELETE_REQ
    return None


def on_bank_loss(slotmap: Slotmap) -> SlotmapState | None:
    """A bankd's connection ends: its maps wait for it as NEW (clients keep their sessions);
    maps being deleted are dropped (``None``), as with the original."""
    return None if slotmap.state in (DELETE_REQ, DELETING) else NEW


def active_map(maps: Sequence[Slotmap]) -> Slotmap | None:
    """The ACTIVE map among a client slot's maps (there is at most one), if any."""
    return next((slotmap for slotmap in maps if slotmap.state is ACTIVE), None)


def client_config(
    maps: Sequence[Slotmap],
    active: Slotmap | None,
    bankd: BankdAddress | None,
    sent: ClientConfig | None,
) -> ClientConfig | None:
    """What to send a client now, given every map of its client slot, the ACTIVE one among
    them (``active_map``), the address of that map's bankd and what the client was last
    told; ``None``: nothing.

    A client is sent its bankd once its map is ACTIVE (the bankd has it), and told to
    disconnect (0.0.0.0:0) only when no map for the bank slot it uses exists any more: a
    bankd that merely lost its control connection leaves the client's session alone.
    """
    if active is not None and bankd is not None:
        wanted = ClientConfig(bank=active.bank, bankd=bankd)
        return wanted if wanted != sent else None
    if sent is not None and not sent.unmapped and all(m.bank != sent.bank for m in maps):
        return ClientConfig.unmap(sent.bank)
    return None
