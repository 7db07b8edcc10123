"""Between RSPRO's wire types and the control plane's models."""

from __future__ import annotations

import ipaddress

import rspro
from remsim_control import (
    BankdAddress,
    BankSlot,
    CardRecord,
    CardState,
    ClientConfig,
    ClientSlot,
    ComponentIdentity,
    ComponentType,
)


def identity(wire: rspro.ComponentIdentity) -> ComponentIdentity:
    return ComponentIdentity(
        type=ComponentType(wire.type.asn_name),
        name=wire.name,
        software=wire.software,
        sw_version=wire.sw_version,
        hw_manufacturer=wire.hw_manufacturer,
        hw_model=wire.hw_model,
        hw_serial_nr=wire.hw_serial_nr,
        hw_version=wire.hw_version,
        fw_version=wire.fw_version,
    )


def bank_slot(wire: rspro.BankSlot) -> BankSlot:
    return BankSlot(bank_id=wire.bank_id, slot_nr=wire.slot_nr)


def client_slot(wire: rspro.ClientSlot) -> ClientSlot:
    return ClientSlot(client_id=wire.client_id, slot_nr=wire.slot_nr)


def card_record(bank_id: int, wire: rspro.CardInfo, last_seen: float) -> CardRecord:
    """A slot of a bankd's card inventory report, as the store keeps it."""
    return CardRecord(
        bank_slot=BankSlot(bank_id=bank_id, slot_nr=wire.slot_nr),
        state=CardState(wire.state.asn_name),
        atr=wire.atr.hex().upper() if wire.atr else None,
        iccid=wire.iccid,
        imsi=wire.imsi,
        last_seen=last_seen,
        tpdu_count=wire.tpdu_count,
        last_activity=None if wire.idle_ms is None else last_seen - wire.idle_ms / 1000,
    )


def wire_bank_slot(slot: BankSlot) -> rspro.BankSlot:
    return rspro.BankSlot(slot.bank_id, slot.slot_nr)


def wire_client_slot(slot: ClientSlot) -> rspro.ClientSlot:
    return rspro.ClientSlot(slot.client_id, slot.slot_nr)


def wire_bankd(address: BankdAddress) -> rspro.IpPort:
    return rspro.IpPort(ipaddress.ip_address(address.host), address.port)


def config_req(config: ClientConfig) -> rspro.ConfigClientBankReq:
    return rspro.ConfigClientBankReq(wire_bank_slot(config.bank), wire_bankd(config.bankd))


def unmapped_ip(host: str) -> str:
    """An IP literal as clients need it: IPv4-mapped IPv6 (a dual-stack listener's view of an
    IPv4 peer) becomes plain IPv4."""
    address = ipaddress.ip_address(host.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
