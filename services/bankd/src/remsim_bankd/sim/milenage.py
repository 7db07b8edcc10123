"""MILENAGE (3GPP TS 35.206) and the GSM conversion functions c2/c3 (TS 33.102 §6.8.1.2).

Kernel: AES-128 with the subscriber key K. Checked against the TS 35.208 test sets.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

__all__ = ["Milenage", "c2", "c3", "opc_from_op"]

_MASK = (1 << 128) - 1

# TS 35.206 §4.1 default constants: rotations in bits and the c_i values.
_R1, _R2, _R3, _R4, _R5 = 64, 0, 32, 64, 96
_C1, _C2, _C3, _C4, _C5 = 0, 1, 2, 4, 8


def _rot(x: int, r: int) -> int:
    return ((x << r) | (x >> (128 - r))) & _MASK if r else x


def _aes(k: bytes) -> CipherContext:
    # ECB over single blocks is exactly the raw block cipher E_K MILENAGE is defined with.
    return Cipher(algorithms.AES(k), modes.ECB()).encryptor()


def opc_from_op(k: bytes, op: bytes) -> bytes:
    """OPc = OP xor E_K(OP)."""
    _check(k, 16, "K")
    _check(op, 16, "OP")
    e = _aes(k).update(op)
    return bytes(a ^ b for a, b in zip(op, e, strict=True))


class Milenage:
    """MILENAGE for one subscriber (K, OPc)."""

    __slots__ = ("_enc", "_opc")

    def __init__(self, k: bytes, opc: bytes) -> None:
        _check(k, 16, "K")
        _check(opc, 16, "OPc")
        self._enc = _aes(k)
        self._opc = int.from_bytes(opc, "big")

    def _e(self, x: int) -> int:
        return int.from_bytes(self._enc.update(x.to_bytes(16, "big")), "big")

    def _temp(self, rand: bytes) -> int:
        _check(rand, 16, "RAND")
        return self._e(int.from_bytes(rand, "big") ^ self._opc)

    def _out(self, temp: int, r: int, c: int) -> bytes:
        return (self._e(_rot(temp ^ self._opc, r) ^ c) ^ self._opc).to_bytes(16, "big")

    def f1(self, rand: bytes, sqn: bytes, amf: bytes) -> tuple[bytes, bytes]:
        """Return (MAC-A, MAC-S) = (f1, f1*) for SQN (6 bytes) and AMF (2 bytes)."""
        _check(sqn, 6, "SQN")
        _check(amf, 2, "AMF")
        temp = self._temp(rand)
        in1 = int.from_bytes(sqn + amf + sqn + amf, "big")
        out1 = (self._e(temp ^ _rot(in1 ^ self._opc, _R1) ^ _C1) ^ self._opc).to_bytes(16, "big")
        return out1[:8], out1[8:]

    def f2345(self, rand: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        """Return (RES, CK, IK, AK) = (f2, f3, f4, f5)."""
        temp = self._temp(rand)
        out2 = self._out(temp, _R2, _C2)
        return out2[8:], self._out(temp, _R3, _C3), self._out(temp, _R4, _C4), out2[:6]

    def f5star(self, rand: bytes) -> bytes:
        """Return AK* = f5*, the anonymity key for re-synchronisation (AUTS)."""
        return self._out(self._temp(rand), _R5, _C5)[:6]

    def autn(self, rand: bytes, sqn: int, amf: bytes = b"\x80\x00") -> bytes:
        """The network side: AUTN = (SQN xor AK) || AMF || MAC-A, as the HLR/HSS sends it."""
        sqn_bytes = sqn.to_bytes(6, "big")
        ak = self.f2345(rand)[3]
        mac_a, _ = self.f1(rand, sqn_bytes, amf)
        return bytes(a ^ b for a, b in zip(sqn_bytes, ak, strict=True)) + amf + mac_a

    def sqn_ms(self, rand: bytes, auts: bytes) -> int:
        """The network side of a synchronisation failure: the card's SQN from its AUTS."""
        _check(auts, 14, "AUTS")
        ak_star = self.f5star(rand)
        return int.from_bytes(bytes(a ^ b for a, b in zip(auts[:6], ak_star, strict=True)), "big")


def c2(res: bytes) -> bytes:
    """SRES from RES: xor of the four 32-bit words of RES zero-padded to 128 bits."""
    padded = res.ljust(16, b"\0")
    words = [int.from_bytes(padded[i : i + 4], "big") for i in range(0, 16, 4)]
    return (words[0] ^ words[1] ^ words[2] ^ words[3]).to_bytes(4, "big")


def c3(ck: bytes, ik: bytes) -> bytes:
    """Kc from CK and IK: CK1 xor CK2 xor IK1 xor IK2 (64-bit halves)."""
    _check(ck, 16, "CK")
    _check(ik, 16, "IK")
    kc = (
        int.from_bytes(ck[:8], "big")
        ^ int.from_bytes(ck[8:], "big")
        ^ int.from_bytes(ik[:8], "big")
        ^ int.from_bytes(ik[8:], "big")
    )
    return kc.to_bytes(8, "big")


def _check(value: bytes, size: int, what: str) -> None:
    if len(value) != size:
        raise ValueError(f"{what} must be {size} bytes, got {len(value)}")
