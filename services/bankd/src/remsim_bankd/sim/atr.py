"""ATR structure (ISO/IEC 7816-3 §8.2): the protocols an ATR offers, and its TCK.

Pure functions, used by the profile's checks and by tests; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AtrInfo", "parse_atr", "with_tck"]


@dataclass(frozen=True, slots=True)
class AtrInfo:
    """What an ATR says about transmission protocols.

    `protocols`: the protocols T=0..14 the TD bytes indicate, in order of appearance, without
    repetitions (T=15 only carries global bytes); an ATR without TD1 offers T=0 only.
    `tck`: whether a TCK byte is present; `tck_ok`: T0 … TCK XOR to 0 (True without TCK).
    """

    protocols: tuple[int, ...]
    historical: bytes
    tck: bool
    tck_ok: bool

    @property
    def default_protocol(self) -> int:
        """The first offered protocol: what a reader uses without PPS."""
        return self.protocols[0]


def parse_atr(atr: bytes) -> AtrInfo:
    """Parse the interface bytes of an ATR; ValueError if it is cut short or has extra bytes."""
    if len(atr) < 2 or atr[0] not in (0x3B, 0x3F):
        raise ValueError("an ATR starts with TS 3B or 3F and T0")
    y, k = atr[1] >> 4, atr[1] & 0x0F
    i = 2
    indicated: list[int] = []
    while True:
        i += bin(y & 0x07).count("1")  # TAi, TBi, TCi
        if not y & 0x08:
            break
        if i >= len(atr):
            raise ValueError("ATR cut short in its interface bytes")
        td = atr[i]
        i += 1
        indicated.append(td & 0x0F)
        y = td >> 4
    historical = atr[i : i + k]
    if len(historical) < k:
        raise ValueError("ATR cut short in its historical bytes")
    offered = tuple(dict.fromkeys(t for t in indicated if t != 15)) or (0,)
    # TCK is present iff a protocol other than T=0 is indicated (§8.2.5).
    tck = any(t != 0 for t in indicated)
    end = i + k + (1 if tck else 0)
    if len(atr) != end:
        raise ValueError(f"ATR has {len(atr)} bytes, its structure says {end}")
    x = 0
    for b in atr[1:]:
        x ^= b
    return AtrInfo(offered, bytes(historical), tck, not tck or x == 0)


def with_tck(atr_without_tck: bytes) -> bytes:
    """The ATR with its TCK appended (XOR of T0 … the last historical byte)."""
    x = 0
    for b in atr_without_tck[1:]:
        x ^= b
    return atr_without_tck + bytes([x])
