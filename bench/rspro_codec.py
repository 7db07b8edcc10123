"""RSPRO codec and IPA framing speed, one core.

    .venv/bin/python bench/rspro_codec.py [--seconds 0.5] [--repeat 5]

Encodes and decodes TpduModemToCard / TpduCardToModem through the public API
(``rspro.encode`` / ``rspro.decode``, which take the DER fast path for these two messages)
and, side by side, through plain asn1tools on the same ASN.1 module (what the fast path
replaces). Then IPA framing: ``IpaFramer.feed`` on a stream of TPDU frames cut into
1448-byte TCP segments, and the whole receive path ``RsproConnection.receive_data``
(framing + decoding into events). Each figure is the best of ``--repeat`` timed runs of
about ``--seconds`` each (best-of, because other load only ever slows a run down).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from importlib import metadata
from typing import Any

import rspro
from rspro import BankSlot, ClientSlot, IpaFramer, RsproConnection, RsproPdu, rspro_frame
from rspro.codec import schema

SEGMENT = 1448  # payload of a full TCP segment on Ethernet with timestamps

C23_0, B1_0 = ClientSlot(23, 0), BankSlot(1, 0)
# a SELECT and a 64-byte UPDATE BINARY to the card; 9F 16 and a 24-byte GET RESPONSE back
MESSAGES: list[tuple[str, RsproPdu]] = [
    (
        "TpduModemToCard, 7-byte SELECT",
        RsproPdu(rspro.TpduModemToCard(C23_0, B1_0, bytes.fromhex("a0a40000023f00"))),
    ),
    (
        "TpduModemToCard, 69-byte UPDATE BINARY",
        RsproPdu(rspro.TpduModemToCard(C23_0, B1_0, bytes.fromhex("a0d6000040") + b"\x55" * 64)),
    ),
    (
        "TpduCardToModem, SW 9F16",
        RsproPdu(rspro.TpduCardToModem(B1_0, C23_0, bytes.fromhex("9f16"))),
    ),
    (
        "TpduCardToModem, 24-byte response",
        RsproPdu(
            rspro.TpduCardToModem(
                B1_0, C23_0, bytes.fromhex("000010003f00010000000000091300040400838a838a9000")
            )
        ),
    ),
]


def asn1tools_value(pdu: RsproPdu) -> dict[str, Any]:
    msg = pdu.msg
    assert isinstance(msg, rspro.TpduModemToCard | rspro.TpduCardToModem)
    flags = dict.fromkeys(
        ("tpduHeaderPresent", "finalPart", "procByteContinueTx", "procByteContinueRx"), False
    )
    if isinstance(msg, rspro.TpduModemToCard):
        slots = {
            "fromClientSlot": {"clientId": 23, "slotNr": 0},
            "toBankSlot": {"bankId": 1, "slotNr": 0},
        }
    else:
        slots = {
            "fromBankSlot": {"bankId": 1, "slotNr": 0},
            "toClientSlot": {"clientId": 23, "slotNr": 0},
        }
    body = {**slots, "flags": flags, "data": msg.data}
    return {"version": pdu.version, "tag": pdu.tag, "msg": (msg.ASN_NAME, body)}


def rate(fn: Callable[[], object], seconds: float, repeat: int) -> float:
    """Calls per second of fn: best of ``repeat`` runs of about ``seconds`` each."""
    n = 1
    while True:  # calibrate a batch size that takes ~1/10 of a run
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start > seconds / 10:
            break
        n *= 2
    best = 0.0
    for _ in range(repeat):
        calls = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(n):
                fn()
            calls += n
        best = max(best, calls / elapsed)
    return best


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    t, r = args.seconds, args.repeat
    asn = schema()

    print(f"CPU: {cpu_model()}; Python {platform.python_version()} ({sys.implementation.name})")
    print(f"asn1tools {metadata.version('asn1tools')}; one core; best of {r} x {t:.1f} s\n")

    print("| message | encode/s rspro | encode/s asn1tools | decode/s rspro | decode/s asn1tools |")
    print("|---|---:|---:|---:|---:|")
    for name, pdu in MESSAGES:
        der = rspro.encode(pdu)
        value = asn1tools_value(pdu)
        assert bytes(asn.encode("RsproPDU", value)) == der
        assert rspro.decode(der) == pdu
        figures = [
            rate(partial(rspro.encode, pdu), t, r),
            rate(partial(asn.encode, "RsproPDU", value), t, r),
            rate(partial(rspro.decode, der), t, r),
            rate(partial(asn.decode, "RsproPDU", der), t, r),
        ]
        print(f"| {name} | " + " | ".join(f"{f:,.0f}" for f in figures) + " |")

    # an APDU exchange as it flows: command, response, command, response, ...
    frames = [rspro_frame(rspro.encode(pdu)) for _, pdu in MESSAGES]
    stream = b"".join(frames) * 2500
    n_frames = len(frames) * 2500
    segments = [stream[i : i + SEGMENT] for i in range(0, len(stream), SEGMENT)]

    def frame_all() -> None:
        framer = IpaFramer()
        for segment in segments:
            framer.feed(segment)

    def receive_all() -> None:
        conn = RsproConnection(initiator=False, keepalive=None)
        for segment in segments:
            conn.receive_data(segment, 0.0)

    print(f"\nStream: {n_frames:,} TPDU frames, {len(stream):,} bytes, {SEGMENT}-byte segments\n")
    print("| stage | MB/s | frames/s |")
    print("|---|---:|---:|")
    for name, fn in (
        ("IpaFramer.feed (framing only)", frame_all),
        ("RsproConnection.receive_data (framing + decode)", receive_all),
    ):
        runs = rate(fn, t, r)
        print(f"| {name} | {runs * len(stream) / 1e6:,.1f} | {runs * n_frames:,.0f} |")
    select = MESSAGES[0][1]
    build = rate(lambda: rspro_frame(rspro.encode(select)), t, r)
    print(f"| rspro_frame(encode(pdu)) (building, SELECT) | — | {build:,.0f} |")


if __name__ == "__main__":
    main()
