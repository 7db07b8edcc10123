"""``make demo``: the whole remsim system on this host, on the embedded single-host default.

pcscd with two software SIMs (vsmartcard vpcd + remsim-vcard), remsim-server (REST API and
control core, its state in SQLite under the demo's own directory, not the per-user one),
remsim-bankd B1 serving both cards, a slotmap B1:0 <-> C23:0
created over REST, and client C23:0 (the RemoteCard API) exchanging SELECT, READ BINARY
EF_IMSI and a 3G AUTHENTICATE with the card. Then everything keeps running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from remsim_bankd.sim import CardProfile, Milenage, load_profile  # noqa: E402
from remsim_bankd.sim.fs import USIM_AID  # noqa: E402
from remsim_client.remote_card import RemoteCard  # noqa: E402
from remsim_testing.simbank import VirtualSimBank, default_profiles, missing_requirements  # noqa: E402
from tests.system import RemsimSystem  # noqa: E402

RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")


def say(text: str = "") -> None:
    print(text, flush=True)


def decode_imsi(ef: bytes) -> str:
    """EF_IMSI: a length byte, then BCD digits nibble-swapped; the first nibble is parity."""
    digits = "".join(f"{b & 0x0F:x}{b >> 4:x}" for b in ef[1 : 1 + ef[0]])
    return digits[1:].rstrip("f")


async def exchange(card: RemoteCard, name: str, apdu: bytes) -> bytes:
    rsp = await card.transmit(apdu)
    say(f"    {name:<28} {apdu.hex(' ')}")
    say(f"    {'':<28} -> {rsp.hex(' ')}")
    return rsp


def decode_iccid(ef: bytes) -> str:
    return "".join(f"{b & 0x0F:x}{b >> 4:x}" for b in ef).rstrip("f")


async def read_iccid(card: RemoteCard) -> str:
    await card.transmit(bytes.fromhex("a0a40000023f00"))
    await card.transmit(bytes.fromhex("a0a40000022fe2"))
    return decode_iccid((await card.transmit(bytes.fromhex("a0b000000a")))[:-2])


async def watch(card: RemoteCard) -> None:
    """Tell what client C23:0 sees while the operator maps and unmaps (the 'try next')."""
    seen = (card.ready, card.atr)
    while True:
        await asyncio.sleep(0.2)
        if (card.ready, card.atr) == seen:
            continue
        seen = (card.ready, card.atr)
        if not card.ready:
            say("  client C23:0: the card is gone (slotmap removed, or bankd unreachable)")
            continue
        say(f"  client C23:0: a card is mapped, ATR {card.atr.hex(' ')}")
        try:
            say(f"    ICCID {await read_iccid(card)}")
        except Exception as exc:  # the card may go again at any moment
            say(f"    (reading the ICCID failed: {exc})")


async def talk_to_the_card(port: int, profile: CardProfile) -> RemoteCard:
    card = RemoteCard(
        server="127.0.0.1", port=port, client_id=23, slot=0, timeout=20, auto_get_response=True
    )
    await card.open()
    say(f"  client C23:0 got the card's ATR {card.atr.hex(' ')}")
    await exchange(card, "SELECT MF (GSM)", bytes.fromhex("a0a40000023f00"))
    await exchange(card, "SELECT DF_GSM", bytes.fromhex("a0a40000027f20"))
    await exchange(card, "SELECT EF_IMSI", bytes.fromhex("a0a40000026f07"))
    ef = await exchange(card, "READ BINARY EF_IMSI", bytes.fromhex("a0b0000009"))
    say(f"    IMSI: {decode_imsi(ef[:-2])}")
    aid = bytes([0x00, 0xA4, 0x04, 0x04, len(USIM_AID)]) + USIM_AID
    await exchange(card, "SELECT ADF.USIM (by AID)", aid)
    m = Milenage(profile.ki, profile.opc_value)
    auth = bytes.fromhex("0088008122") + b"\x10" + RAND + b"\x10" + m.autn(RAND, profile.sqn + 32)
    rsp = await exchange(card, "AUTHENTICATE (3G context)", auth)
    res, ck, ik, _ = m.f2345(RAND)
    if rsp[:2] == b"\xdb\x08":
        ok = rsp[2:10] == res and rsp[11:27] == ck and rsp[28:44] == ik
        say(f"    RES {rsp[2:10].hex()}  CK {rsp[11:27].hex()}  IK {rsp[28:44].hex()}")
        say(f"    {'matches' if ok else 'DIFFERS FROM'} Milenage(Ki, OPc) computed here")
    elif rsp[:1] == b"\xdc":
        say("    synchronisation failure (AUTS): the card has seen a higher SQN before")
    return card


async def run(args: argparse.Namespace) -> None:
    profiles = default_profiles()
    workdir = Path(tempfile.mkdtemp(prefix="remsim-demo-"))
    # the in-process client's log goes with the others' (server.log, bankd.log, ...)
    logging.basicConfig(
        filename=workdir / "client-C23:0.log",
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    say("remsim demo: the whole system on this host\n")
    with VirtualSimBank(profiles=profiles) as bank:
        names = ", ".join(f"{r} ({p.stem})" for r, p in zip(bank.readers, profiles, strict=True))
        say(f"  pcscd + vpcd with two software SIMs: {names}")
        system = RemsimSystem(
            bank, workdir, rest_port=args.rest_port, rspro_port=args.rspro_port,
            bankd_port=args.bankd_port, store="sqlite",
        )  # fmt: skip
        try:
            system.start_server()
            say(f"  remsim-server: REST API http://127.0.0.1:{system.rest_port}/docs, "
                f"RSPRO control on port {system.rspro_port}, state (SQLite, the single-host "
                f"default) in {system.state_dir}")  # fmt: skip
            system.start_bankd()
            say(
                f"  remsim-bankd B1: {len(bank.readers)} slots, clients on port {system.bankd_port}"
            )
            system.map(bank_slot=0, client_id=23)
            say("  slotmap B1:0 <-> C23:0 created: POST /api/backend/v1/slotmaps\n")
            card = await talk_to_the_card(system.rspro_port, load_profile(profiles[0]))
            try:
                api = f"remsim-apitool -H 127.0.0.1 -p {system.rest_port}"
                say(f"""
Try next (in another terminal, from {ROOT}: `source .venv/bin/activate` first):
    {api} -a                   # banks, clients and slotmaps
    {api} -d 1 0               # unmap B1:0: client C23:0 loses its card
    {api} -m 1 1 23 0          # map B1:1 (card1) to C23:0: it gets the other card
    open http://127.0.0.1:{system.rest_port}/docs      # the REST API, interactive
    rspro decode 0010ee07300d800102810100a205b2030a0100   # decode RSPRO bytes
Logs: {workdir}
Ctrl-C stops everything.""")
                if not args.once:
                    stop = asyncio.Event()
                    loop = asyncio.get_running_loop()
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        loop.add_signal_handler(sig, stop.set)
                    watcher = asyncio.create_task(watch(card))
                    await stop.wait()
                    watcher.cancel()
            finally:
                await card.close()
        finally:
            say("\nstopping client, bankd, server, pcscd ...")
            system.stop()
    say("done")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rest-port", type=int, default=9997)
    parser.add_argument("--rspro-port", type=int, default=9998)
    parser.add_argument("--bankd-port", type=int, default=9999)
    parser.add_argument("--once", action="store_true", help="stop after the card exchange")
    args = parser.parse_args()
    if reason := missing_requirements():
        sys.exit(f"demo: {reason} (run `make demo` as root on Debian to install it)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
