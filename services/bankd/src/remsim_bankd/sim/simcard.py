"""The software SIM's command processor: C-APDU in, R-APDU out; no I/O, no clock.

A T=0 SIM/USIM with GSM (CLA A0, GSM 11.11) and UICC (CLA 00/80, TS 102 221 / TS 31.102)
command sets. Response data of SELECT and AUTHENTICATE is fetched with GET RESPONSE after a
9Fxx (class A0) or 61xx (class 00) status word; a wrong Le is answered with 6Cxx, as the
card used for the upstream recordings did.

A profile with protocol "t1" or "t0t1" makes it a card that speaks T=1 (a virtual card cannot
tell which protocol a reader negotiated, so a "t0t1" card behaves so on both): C-APDUs are
parsed as ISO/IEC 7816-4 §5.1 APDUs, short or extended; a case-4 command that carries Le gets
its response data and 9000 directly (61xx for the rest if Le is shorter), one without Le
answers 61xx as on T=0; an extended Le (or a short Le 00) is a maximum: the data available,
up to Ne bytes, and 9000. Everything a T=0 TPDU can say is answered as on T=0. A "t0" card
answers an extended-length APDU with 6700.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass

from .fs import (
    DF,
    EF,
    Access,
    build_filesystem,
    fcp_df,
    fcp_ef,
    gsm_df_response,
    gsm_ef_response,
)
from .milenage import Milenage, c2, c3
from .profile import CardProfile

__all__ = ["SQN_WINDOW", "Command", "SimCard", "SoftSim", "parse_apdu"]

# Largest accepted step of SQN above the highest SQN accepted so far (TS 33.102 Annex C's Δ).
SQN_WINDOW = 1 << 28

_OK = b"\x90\x00"

Handler = Callable[[bool, int, int, bytes], bytes]


class _Sw(Exception):  # internal control flow: "answer with this status word"
    """Abort the command with a status word; GSM (class A0) and ISO variants may differ."""

    def __init__(self, gsm: int, iso: int | None = None) -> None:
        self.gsm = gsm
        self.iso = gsm if iso is None else iso


_WRONG_LENGTH = _Sw(0x6700)
_WRONG_P1P2 = _Sw(0x6B00, 0x6A86)
_NOT_FOUND = _Sw(0x9404, 0x6A82)
_NO_EF = _Sw(0x9400, 0x6986)
_WRONG_STRUCTURE = _Sw(0x9408, 0x6981)
_OUT_OF_RANGE = _Sw(0x9402, 0x6B00)
_SECURITY = _Sw(0x9804, 0x6982)
_BLOCKED = _Sw(0x9840, 0x6983)
_NO_KEY = _Sw(0x6B00, 0x6A88)


@dataclass(eq=False)
class _Pin:
    value: bytes | None  # None: no such secret on this card (ADM not provisioned)
    retries: int
    remaining: int
    enabled: bool = True
    verified: bool = False
    puk: _Pin | None = None

    @property
    def status(self) -> int:
        """GSM CHV status byte: b8 = initialised, b4..b1 = attempts left."""
        return 0x80 | self.remaining

    @property
    def satisfied(self) -> bool:
        return self.verified or not self.enabled

    def present(self, value: bytes) -> None:
        if self.value is None:
            raise _NO_KEY
        if self.remaining == 0:
            raise _BLOCKED
        if value != self.value:
            self.remaining -= 1
            self.verified = False
            raise _Sw(0x9840 if self.remaining == 0 else 0x9804, 0x63C0 | self.remaining)
        self.remaining = self.retries
        self.verified = True


def _le_t0(apdu: bytes) -> int:
    """P3 of a command with outgoing data (case 2); 0 when absent."""
    if len(apdu) > 5:
        raise _WRONG_LENGTH
    return apdu[4] if len(apdu) == 5 else 0


def _data_t0(apdu: bytes) -> bytes:
    """Command data of a case 3 command; one trailing Le byte (case 4 APDU) is tolerated."""
    if len(apdu) < 5:
        raise _WRONG_LENGTH
    lc = apdu[4]
    if not lc or len(apdu) not in (5 + lc, 6 + lc):
        raise _WRONG_LENGTH
    return apdu[5 : 5 + lc]


@dataclass(frozen=True, slots=True)
class Command:
    """A C-APDU's body (ISO/IEC 7816-4 §5.1): `data` (Nc bytes), `ne` (None: no Le field,
    else 1..65,536) and whether Lc/Le were extended."""

    data: bytes
    ne: int | None
    extended: bool


def parse_apdu(apdu: bytes) -> Command:
    """Split a C-APDU into its body (cases 1, 2S/E, 3S/E, 4S/E); ValueError if malformed."""
    n = len(apdu)
    if n < 4:
        raise ValueError("a C-APDU has at least 4 bytes")
    if n == 4:
        return Command(b"", None, False)
    b4 = apdu[4]
    if n == 5:
        return Command(b"", b4 or 256, False)
    if b4:
        if n == 5 + b4:
            return Command(apdu[5:], None, False)
        if n == 6 + b4:
            return Command(apdu[5:-1], apdu[-1] or 256, False)
        raise ValueError(f"short Lc {b4} does not match {n} bytes")
    if n == 7:
        return Command(b"", int.from_bytes(apdu[5:7], "big") or 65536, True)
    lc = int.from_bytes(apdu[5:7], "big")
    if lc and n == 7 + lc:
        return Command(apdu[7:], None, True)
    if lc and n == 9 + lc:
        return Command(apdu[7:-2], int.from_bytes(apdu[-2:], "big") or 65536, True)
    raise ValueError(f"extended Lc {lc} does not match {n} bytes")


def _no_data(apdu: bytes) -> bool:
    return len(apdu) == 4 or (len(apdu) == 5 and apdu[4] == 0)


def _le_reply(data: bytes, le: int) -> bytes:
    """Answer a case 2 command: Le 0 takes all, a short Le truncates, a long one gets 6Cxx."""
    if le == 0 or le == len(data):
        return data + _OK
    if le > len(data):
        raise _Sw(0x6C00 | (len(data) & 0xFF))
    return data[:le] + _OK


class SimCard:
    """A SIM/USIM card fed with C-APDUs; call `process` for each, `reset` on power cycles.

    PIN retry counters and the authentication SQN live as long as the object (they are the
    card's non-volatile memory); selection, PIN verification state and pending response data
    are lost on `reset`.
    """

    def __init__(
        self, profile: CardProfile, *, challenge: Callable[[int], bytes] | None = None
    ) -> None:
        self.profile = profile
        self.atr = profile.atr
        self._t1 = 1 in profile.protocols
        self._cmd = Command(b"", None, False)  # the command being processed, T=1 only
        self._atrs = itertools.cycle((profile.atr, *profile.atr_cycle))
        self.mf, self.adf = build_filesystem(profile)
        self.milenage = Milenage(profile.ki, profile.opc_value)
        self.sqn = profile.sqn
        if challenge is None:
            challenge = _counting if profile.challenge == "counting" else os.urandom
        self._challenge = challenge

        def pin(name: str, enabled: bool = True, puk: _Pin | None = None) -> _Pin:
            retries: int = getattr(profile, f"{name}_retries")
            return _Pin(profile.pin_bytes(name), retries, retries, enabled, puk=puk)

        self.puk1 = pin("puk1")
        self.puk2 = pin("puk2")
        self.pin1 = pin("pin1", profile.pin1_enabled, self.puk1)
        self.pin2 = pin("pin2", profile.pin2_enabled, self.puk2)
        self.adm1 = pin("adm1")
        self._gsm_refs = {0x01: self.pin1, 0x02: self.pin2, 0x0A: self.adm1}
        self._iso_refs = {0x01: self.pin1, 0x81: self.pin2, 0x0A: self.adm1}

        h = self
        common = {
            0xA4: h._select,
            0xC0: h._get_response,
            0xB0: h._read_binary,
            0xB2: h._read_record,
            0xD6: h._update_binary,
            0x20: h._verify,
            0x24: h._change_pin,
            0x26: h._disable_pin,
            0x28: h._enable_pin,
            0x2C: h._unblock_pin,
            0x88: h._authenticate,
        }
        self._by_class: dict[int, dict[int, Handler]] = {
            0xA0: {**common, 0xF2: h._status},
            0x00: {**common, 0x84: h._get_challenge},
            0x80: {0xF2: h._status},
        }
        self._clear()

    @property
    def protocol(self) -> int:
        """The card's default protocol (its first offer): 0 (T=0) or 1 (T=1)."""
        return self.profile.protocols[0]

    @property
    def protocols(self) -> tuple[int, ...]:
        """The protocols the ATR offers, the default first: (0,), (1,) or (0, 1)."""
        return self.profile.protocols

    # --- power / dispatch ------------------------------------------------------------------

    def reset(self, warm: bool = False) -> bytes:
        """Reset: back to the MF, security state cleared. Returns the ATR; a cold reset
        (power-up) takes the next one of the profile's ``atr``, ``*atr_cycle``."""
        if not warm:
            self.atr = next(self._atrs)
        self._clear()
        return self.atr

    def _clear(self) -> None:
        self.df: DF = self.mf
        self.ef: EF | None = None
        self._record = 0
        self._pending = b""
        for p in (self.pin1, self.pin2, self.adm1):
            p.verified = False

    def process(self, apdu: bytes) -> bytes:
        """Execute one command TPDU (CLA INS P1 P2 [P3 [data]]); return data + SW1 SW2."""
        if len(apdu) < 4:
            return b"\x67\x00"
        cla, ins = apdu[0], apdu[1]
        table = self._by_class.get(cla)
        if table is None:
            # Logical channels 1..3 are not offered.
            return b"\x68\x81" if (cla & 0xFC) in (0x00, 0x80) else b"\x6e\x00"
        handler = table.get(ins)
        if handler is None:
            # Class 80 carries only STATUS here; anything else in it is an unsupported class
            # (the recorded card answered 80 CA with 6E00 too).
            return b"\x6e\x00" if cla == 0x80 else b"\x6d\x00"
        if ins != 0xC0:
            self._pending = b""  # response data is only available to the very next command
        if self._t1:
            try:
                self._cmd = parse_apdu(apdu)
            except ValueError:
                return b"\x67\x00"
        elif len(apdu) > 5 and apdu[4] == 0:
            return b"\x67\x00"  # extended length: not on T=0 (short P3 00 has no data)
        gsm = cla == 0xA0
        try:
            return handler(gsm, apdu[2], apdu[3], apdu)
        except _Sw as sw:
            return (sw.gsm if gsm else sw.iso).to_bytes(2, "big")

    def _respond_later(self, gsm: bool, data: bytes) -> bytes:
        """Answer a case-4 command: 9Fxx/61xx and the data for GET RESPONSE; on T=1 with Le,
        the data (up to Ne bytes; 61xx/9Fxx for the rest)."""
        ne = self._cmd.ne if self._t1 else None
        if ne is not None:
            if ne >= len(data):
                return data + _OK
            data, self._pending = data[:ne], data[ne:]
            return data + bytes([0x9F if gsm else 0x61, len(self._pending) & 0xFF])
        self._pending = data
        return bytes([0x9F if gsm else 0x61, len(data) & 0xFF])

    def _le(self, apdu: bytes) -> int:
        """Le of a case-2 command: 0 when absent or 00 (all, up to 256 bytes on T=0), else
        1..255; on T=1 also an extended Le (0 for 0000: up to 65,536 bytes)."""
        if not self._t1:
            return _le_t0(apdu)
        cmd = self._cmd
        if cmd.data:
            raise _WRONG_LENGTH
        if cmd.ne is None:
            return 0
        return 0 if cmd.ne == (65536 if cmd.extended else 256) else cmd.ne

    def _data(self, apdu: bytes) -> bytes:
        """Command data of a case-3/4 command (on T=1 short or extended, Le ignored)."""
        if not self._t1:
            return _data_t0(apdu)
        if not self._cmd.data:
            raise _WRONG_LENGTH
        return self._cmd.data

    def _le_reply(self, data: bytes, le: int) -> bytes:
        """Answer a case-2 command (`le` from `_le`); an extended Le is a maximum."""
        if self._t1 and self._cmd.extended:
            return (data[:le] if le else data) + _OK
        return _le_reply(data, le)

    # --- file selection -------------------------------------------------------------------

    def _find(self, fid: int, gsm: bool) -> EF | DF | None:
        df = self.df
        if fid == 0x3F00:
            return self.mf
        if fid == 0x7FFF and not gsm:
            return self.adf
        if fid == df.fid:
            return df
        child = df.children.get(fid)
        if child is not None:
            return child
        parent = df.parent
        if parent is not None:
            if fid == parent.fid:
                return parent
            sibling = parent.children.get(fid)
            if isinstance(sibling, DF):
                return sibling
        return None

    def _walk(self, start: DF, path: bytes) -> EF | DF | None:
        f: EF | DF | None = start
        for i in range(0, len(path), 2):
            if not isinstance(f, DF):
                return None
            fid = int.from_bytes(path[i : i + 2], "big")
            f = self.mf if fid == 0x3F00 and i == 0 else f.children.get(fid)
        return f

    def _select(self, gsm: bool, p1: int, p2: int, apdu: bytes) -> bytes:
        if gsm:
            if p1 or p2:
                raise _WRONG_P1P2
            data = self._data(apdu)
            if len(data) != 2:
                raise _WRONG_LENGTH
            f = self._find(int.from_bytes(data, "big"), True)
        else:
            if p2 not in (0x00, 0x04, 0x0C):
                raise _WRONG_P1P2
            if p1 == 0x03:
                f = self.df.parent
            else:
                data = self._data(apdu)
                if p1 == 0x00:
                    if len(data) != 2:
                        raise _WRONG_LENGTH
                    f = self._find(int.from_bytes(data, "big"), False)
                elif p1 == 0x04:
                    f = self.adf if self.adf.aid.startswith(data) else None
                elif p1 in (0x08, 0x09):
                    if len(data) % 2:
                        raise _WRONG_LENGTH
                    f = self._walk(self.mf if p1 == 0x08 else self.df, data)
                else:
                    raise _WRONG_P1P2
        if f is None:
            raise _NOT_FOUND
        if isinstance(f, DF):
            self.df, self.ef = f, None
        else:
            assert f.parent is not None
            self.df, self.ef, self._record = f.parent, f, 0
        if gsm:
            return self._respond_later(True, self._gsm_response(f))
        if p2 == 0x0C:
            return _OK
        return self._respond_later(False, self._fcp(f))

    def _gsm_response(self, f: EF | DF) -> bytes:
        if isinstance(f, EF):
            return gsm_ef_response(f)
        statuses = bytes([self.pin1.status, self.puk1.status, self.pin2.status, self.puk2.status])
        return gsm_df_response(f, self.pin1.enabled, statuses)

    def _fcp(self, f: EF | DF) -> bytes:
        if isinstance(f, EF):
            return fcp_ef(f)
        # PIN status template: PS_DO (b8: PIN1 enabled, b7: PIN2 enabled), key references.
        ps = (0x80 if self.pin1.enabled else 0) | (0x40 if self.pin2.enabled else 0)
        return fcp_df(f, bytes([0x90, 0x01, ps, 0x83, 0x01, 0x01, 0x83, 0x01, 0x81]))

    def _get_response(self, gsm: bool, p1: int, p2: int, apdu: bytes) -> bytes:
        data, self._pending = self._pending, b""
        if p1 or p2:
            raise _WRONG_P1P2
        le = self._le(apdu)
        if not data:
            raise _Sw(0x6F00, 0x6985)
        if le > len(data) and self._t1 and self._cmd.extended:
            le = 0  # an extended Le is a maximum
        if le > len(data):
            self._pending = data  # still there for the retry with the right Le
            raise _Sw(0x6C00 | len(data))
        if le == 0 or le == len(data) or gsm:
            return self._le_reply(data, le)
        self._pending = data[le:]
        return data[:le] + bytes([0x61, len(self._pending)])

    def _status(self, gsm: bool, p1: int, p2: int, apdu: bytes) -> bytes:
        le = self._le(apdu)
        if gsm:
            if p1 or p2:
                raise _WRONG_P1P2
            return self._le_reply(self._gsm_response(self.df), le)
        if p2 == 0x0C:
            return _OK
        if p2 == 0x00:
            return self._le_reply(self._fcp(self.df), le)
        if p2 == 0x01 and self.df.aid:
            return self._le_reply(b"\x84" + bytes([len(self.df.aid)]) + self.df.aid, le)
        raise _WRONG_P1P2

    # --- data access ------------------------------------------------------------------------

    def _check(self, access: Access) -> None:
        if access is Access.ALW:
            return
        if access is Access.PIN1 and self.pin1.satisfied:
            return
        if access is Access.PIN2 and self.pin2.satisfied:
            return
        if access is Access.ADM and self.adm1.verified:
            return
        raise _SECURITY

    def _binary_target(self, gsm: bool, p1: int, p2: int) -> tuple[EF, int]:
        if p1 & 0x80 and not gsm:  # short file identifier in P1, offset in P2
            ef = self.df.by_sfi(p1 & 0x1F)
            if ef is None:
                raise _NOT_FOUND
            self.ef, self._record = ef, 0
            return ef, p2
        if self.ef is None:
            raise _NO_EF
        return self.ef, (p1 & 0x7F) << 8 | p2

    def _read_binary(self, gsm: bool, p1: int, p2: int, apdu: bytes) -> bytes:
        le = self._le(apdu)
        ef, offset = self._binary_target(gsm, p1, p2)
        if ef.record_len:
            raise _WRONG_STRUCTURE
        self._check(ef.read)
        if offset >= len(ef.data):
            raise _OUT_OF_RANGE
        limit = (le or 65536) if self._t1 and self._cmd.extended else 256
        return self._le_reply(bytes(ef.data[offset : offset + limit]), le)

    def _update_binary(self, gsm: bool, p1: int, p2: int, apdu: bytes) -> bytes:
        data = self._data(apdu)
        ef, offset = self._binary_target(gsm, p1, p2)
        if ef.record_len:
            raise _WRONG_STRUCTURE
        self._check(ef.update)
        if offset >= len(ef.data):
            raise _OUT_OF_RANGE
        if offset + len(data) > len(ef.data):
            raise _Sw(0x9402, 0x6700)
        ef.data[offset : offset + len(data)] = data
        return _OK

    def _read_record(self, gsm: bool, p1: int, p2: int, apdu: bytes) -> bytes:
        le = self._le(apdu)
        sfi, mode = p2 >> 3, p2 & 0x07
        if sfi and not gsm:
            found = self.df.by_sfi(sfi)
            if found is None:
                raise _NOT_FOUND
            if found is not self.ef:
                self.ef, self._record = found, 0
        ef = self.ef
        if ef is None:
            raise _NO_EF
        if not ef.record_len:
            raise _WRONG_STRUCTURE
        self._check(ef.read)
        if mode == 0x04:
            number = p1 or self._record
        elif mode == 0x02 and not p1:
            number = self._record + 1
        elif mode == 0x03 and not p1:
            number = self._record - 1 if self._record else ef.records
        else:
            raise _WRONG_P1P2
        if not 1 <= number <= ef.records:
            raise _Sw(0x9402, 0x6A83)
        if mode != 0x04:
            self._record = number
        start = (number - 1) * ef.record_len
        return self._le_reply(bytes(ef.data[start : start + ef.record_len]), le)

    # --- PINs ----------------------------------------------------------------------------

    def _pin(self, gsm: bool, p1: int, p2: int) -> _Pin:
        if p1:
            raise _WRONG_P1P2
        pin = (self._gsm_refs if gsm else self._iso_refs).get(p2)
        if pin is None:
            raise _NO_KEY
        return pin

    def _verify(self, gsm: bool, p1: int, p2: int, apdu: bytes) -> bytes:
        pin = self._pin(gsm, p1, p2)
        if not gsm and _no_data(apdu):
            # VERIFY without data asks for the state: done, or the attempts left.
            if pin.value is None:
                raise _NO_KEY
            if pin.remaining == 0:
                raise _BLOCKED
            return _OK if pin.satisfied else (0x63C0 | pin.remaining).to_bytes(2, "big")
        data = self._data(apdu)
        if len(data) != 8:
            raise _WRONG_LENGTH
        pin.present(data)
        return _OK

    def _change_pin(self, gsm: bool, p1: int, p2: int, apdu: bytes) -> bytes:
        pin = self._pin(gsm, p1, p2)
        if pin is self.adm1:
            raise _NO_KEY
        data = self._data(apdu)
        if len(data) != 16:
            raise _WRONG_LENGTH
        if not pin.enabled:
            raise _Sw(0x9808, 0x6984)
        pin.present(data[:8])
        pin.value = data[8:]
        return _OK

    def _disable_pin(self, gsm: bool, p1: int, p2: int, apdu: bytes) -> bytes:
        return self._switch_pin(gsm, p1, p2, apdu, enable=False)

    def _enable_pin(self, gsm: bool, p1: int, p2: int, apdu: bytes) -> bytes:
        return self._switch_pin(gsm, p1, p2, apdu, enable=True)

    def _switch_pin(self, gsm: bool, p1: int, p2: int, apdu: bytes, *, enable: bool) -> bytes:
        pin = self._pin(gsm, p1, p2)
        if pin is not self.pin1:  # only PIN1 may be switched off (GSM 11.11, TS 31.102)
            raise _NO_KEY
        data = self._data(apdu)
        if len(data) != 8:
            raise _WRONG_LENGTH
        if pin.enabled == enable:
            raise _Sw(0x9808, 0x6985)
        pin.present(data)
        pin.enabled = enable
        return _OK

    def _unblock_pin(self, gsm: bool, p1: int, p2: int, apdu: bytes) -> bytes:
        # GSM numbers the unblock references 00 (CHV1) and 02 (CHV2).
        pin = self._pin(gsm, p1, 0x01 if gsm and p2 == 0x00 else p2)
        puk = pin.puk
        if puk is None or (gsm and p2 == 0x01):
            raise _NO_KEY
        if not gsm and _no_data(apdu):
            if puk.remaining == 0:
                raise _BLOCKED
            return (0x63C0 | puk.remaining).to_bytes(2, "big")
        data = self._data(apdu)
        if len(data) != 16:
            raise _WRONG_LENGTH
        puk.present(data[:8])
        pin.value = data[8:]
        pin.remaining = pin.retries
        pin.verified = True
        return _OK

    # --- authentication -------------------------------------------------------------------

    def _authenticate(self, gsm: bool, p1: int, p2: int, apdu: bytes) -> bytes:
        data = self._data(apdu)
        if gsm:  # RUN GSM ALGORITHM: RAND → SRES ‖ Kc
            if p1 or p2:
                raise _WRONG_P1P2
            if len(data) != 16:
                raise _WRONG_LENGTH
            self._check(Access.PIN1)
            res, ck, ik, _ = self.milenage.f2345(data)
            return self._respond_later(True, c2(res) + c3(ck, ik))
        if p1 or p2 not in (0x80, 0x81):
            raise _WRONG_P1P2
        self._check(Access.PIN1)
        if p2 == 0x80:  # GSM security context: 10 RAND → 04 SRES 08 Kc
            if len(data) != 17 or data[0] != 16:
                raise _WRONG_LENGTH
            res, ck, ik, _ = self.milenage.f2345(data[1:])
            return self._respond_later(False, b"\x04" + c2(res) + b"\x08" + c3(ck, ik))
        if len(data) != 34 or data[0] != 16 or data[17] != 16:
            raise _WRONG_LENGTH
        return self._respond_later(False, self._authenticate_3g(data[1:17], data[18:34]))

    def _authenticate_3g(self, rand: bytes, autn: bytes) -> bytes:
        """TS 33.102 §6.3.3 on the USIM: check MAC and SQN; DB (success) or DC (AUTS)."""
        m = self.milenage
        res, ck, ik, ak = m.f2345(rand)
        sqn = int.from_bytes(autn[:6], "big") ^ int.from_bytes(ak, "big")
        mac_a, _ = m.f1(rand, sqn.to_bytes(6, "big"), autn[6:8])
        if mac_a != autn[8:]:
            raise _Sw(0x9862)
        if not self.sqn < sqn <= self.sqn + SQN_WINDOW:
            sqn_ms = self.sqn.to_bytes(6, "big")
            _, mac_s = m.f1(rand, sqn_ms, b"\x00\x00")  # AMF* = 0000 for re-synchronisation
            concealed = bytes(a ^ b for a, b in zip(sqn_ms, m.f5star(rand), strict=True))
            return b"\xdc\x0e" + concealed + mac_s
        self.sqn = sqn
        return (
            b"\xdb" + bytes([len(res)]) + res + b"\x10" + ck + b"\x10" + ik + b"\x08" + c3(ck, ik)
        )

    def _get_challenge(self, gsm: bool, p1: int, p2: int, apdu: bytes) -> bytes:
        if p1 or p2:
            raise _WRONG_P1P2
        return self._challenge(self._le(apdu) or 256) + _OK


def _counting(n: int) -> bytes:
    return bytes(i & 0xFF for i in range(n))


SoftSim = SimCard
