"""The software SIM's file system and its two views of a file: GSM response data and 3G FCP."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from .profile import LARGE_EF_FID, CardProfile

__all__ = ["DF", "EF", "USIM_AID", "Access", "build_filesystem", "large_ef_content"]

# 3GPP USIM application: RID A000000087, application code 1002, then provider data.
USIM_AID = bytes.fromhex("a0000000871002ffffffff8907090000")


class Access(IntEnum):
    """Access condition, valued as GSM 11.11 encodes it in one nibble."""

    ALW = 0x0
    PIN1 = 0x1
    PIN2 = 0x2
    ADM = 0x4
    NEV = 0xF


@dataclass(eq=False)
class EF:
    """Elementary file: transparent (record_len 0) or linear fixed."""

    fid: int
    name: str
    data: bytearray
    read: Access = Access.ALW
    update: Access = Access.ADM
    record_len: int = 0
    sfi: int = 0
    parent: DF | None = None

    @property
    def records(self) -> int:
        return len(self.data) // self.record_len if self.record_len else 0


@dataclass(eq=False)
class DF:
    """Dedicated file: the MF, a DF, or an ADF (which has an AID and FID 7FFF)."""

    fid: int
    name: str
    aid: bytes = b""
    children: dict[int, EF | DF] = field(default_factory=dict)
    parent: DF | None = None

    def add(self, *files: EF | DF) -> DF:
        for f in files:
            f.parent = self
            self.children[f.fid] = f
        return self

    def by_sfi(self, sfi: int) -> EF | None:
        for f in self.children.values():
            if isinstance(f, EF) and f.sfi == sfi:
                return f
        return None


def _dir_record(aid: bytes, label: bytes) -> bytes:
    body = b"\x4f" + bytes([len(aid)]) + aid + b"\x50" + bytes([len(label)]) + label
    return (b"\x61" + bytes([len(body)]) + body).ljust(32, b"\xff")


def large_ef_content(size: int) -> bytes:
    """EF.LARGE's initial contents: byte i is i % 251 (a prime: no period of 256)."""
    return bytes(i % 251 for i in range(size))


def build_filesystem(profile: CardProfile) -> tuple[DF, DF]:
    """Build (MF, ADF_USIM) for a profile.

    DF_GSM and ADF_USIM share the EF_IMSI and EF_AD contents (one bytearray each), as
    cards do that link the GSM and USIM views of the same file.
    """
    imsi = bytearray(profile.ef_imsi)
    ad = bytearray(profile.ad)
    loci = bytearray(profile.loci)
    mf = DF(0x3F00, "MF")
    adf = DF(0x7FFF, "ADF.USIM", aid=USIM_AID, parent=mf)
    mf.add(
        EF(0x2FE2, "EF.ICCID", bytearray(profile.ef_iccid), Access.ALW, Access.ADM, sfi=0x02),
        EF(0x2F00, "EF.DIR", bytearray(_dir_record(USIM_AID, b"USIM")), record_len=32, sfi=0x1E),
        DF(0x7F10, "DF.TELECOM"),
        DF(0x7F20, "DF.GSM").add(
            # READ/UPDATE CHV1 for EF_IMSI is what the recorded card reported (11 ff 44).
            EF(0x6F07, "EF.IMSI", imsi, Access.PIN1, Access.PIN1),
            EF(0x6FAD, "EF.AD", ad, Access.ALW, Access.ADM),
            EF(0x6F7E, "EF.LOCI", loci, Access.PIN1, Access.PIN1),
        ),
    )
    if profile.large_ef:
        content = bytearray(large_ef_content(profile.large_ef))
        mf.add(EF(LARGE_EF_FID, "EF.LARGE", content, Access.ALW, Access.ALW))
    adf.add(
        EF(0x6F07, "EF.IMSI", imsi, Access.PIN1, Access.PIN1, sfi=0x07),
        EF(0x6FAD, "EF.AD", ad, Access.ALW, Access.ADM, sfi=0x03),
        EF(0x6F38, "EF.UST", bytearray(profile.ust), Access.PIN1, Access.ADM, sfi=0x04),
        EF(0x6F7E, "EF.LOCI", loci, Access.PIN1, Access.PIN1, sfi=0x0B),
    )
    return mf, adf


# --- GSM 11.11 §9.2.1 response data -------------------------------------------------------


def gsm_df_response(df: DF, chv1_enabled: bool, statuses: bytes) -> bytes:
    """22 bytes of GSM SELECT/STATUS response data for MF/DF.

    `statuses`: CHV1, UNBLOCK CHV1, CHV2, UNBLOCK CHV2 status bytes.
    """
    dfs = sum(1 for f in df.children.values() if isinstance(f, DF))
    efs = len(df.children) - dfs
    # File characteristics 0x13 as the recorded card (clock stop allowed, 3 V); b8: CHV1 off.
    characteristics = 0x13 | (0x00 if chv1_enabled else 0x80)
    return (
        b"\x00\x00\x10\x00"
        + df.fid.to_bytes(2, "big")
        + (b"\x01" if df.parent is None else b"\x02")
        + b"\x00" * 5
        + bytes([9, characteristics, dfs, efs, 4, 0])
        + statuses
    )


def gsm_ef_response(ef: EF) -> bytes:
    """15 bytes of GSM SELECT response data for an EF."""
    structure = 0x01 if ef.record_len else 0x00
    return (
        b"\x00\x00"
        + len(ef.data).to_bytes(2, "big")
        + ef.fid.to_bytes(2, "big")
        + b"\x04\x00"
        + bytes([ef.read << 4 | ef.update, 0xFF, Access.ADM << 4 | Access.ADM])
        + bytes([0x01, 0x02, structure, ef.record_len])
    )


# --- ETSI TS 102 221 §11.1.1.3 FCP templates ---------------------------------------------


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag, len(value)]) + value


def fcp_df(df: DF, pin_status: bytes | None) -> bytes:
    """FCP of MF/DF/ADF. `pin_status` (the C6 template body) is left out for the MF, like
    the recorded card's MF FCP."""
    body = _tlv(0x82, b"\x78\x21")
    body += _tlv(0x84, df.aid) if df.aid else _tlv(0x83, df.fid.to_bytes(2, "big"))
    body += _tlv(0xA5, b"\x80\x01\x71") + _tlv(0x8A, b"\x05")
    if pin_status is not None and df.parent is not None:
        body += _tlv(0xC6, pin_status)
    return _tlv(0x62, body)


def fcp_ef(ef: EF) -> bytes:
    # 41: working EF, transparent; 42: linear fixed, with record length and count.
    descriptor = (
        bytes([0x42, 0x21, 0x00, ef.record_len, ef.records]) if ef.record_len else b"\x41\x21"
    )
    body = _tlv(0x82, descriptor) + _tlv(0x83, ef.fid.to_bytes(2, "big")) + _tlv(0x8A, b"\x05")
    body += _tlv(0x80, len(ef.data).to_bytes(2, "big"))
    if ef.sfi:
        body += _tlv(0x88, bytes([ef.sfi << 3]))
    return _tlv(0x62, body)
