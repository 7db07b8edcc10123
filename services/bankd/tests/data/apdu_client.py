"""A client process for the liveness tests: ``apdu_client.py PORT CLIENT_ID BANK_SLOT``.

Connects to the bankd as C<CLIENT_ID>:0 (answering PINGs), prints ``mapped`` once it has
the ATR, then sends SELECT MF over and over, printing ``ok <n>`` after every 20 answers;
prints ``closed`` and exits 1 if the bankd closes the connection or an answer is wrong.
"""

from __future__ import annotations

import asyncio
import sys

from remsim_testing.bankd import connect_client, transceive
from rspro import BankSlot, ClientSlot, ResultCode

SELECT_MF = bytes.fromhex("a0a40000023f00")


async def main(port: int, client_id: int, bank_slot: int) -> int:
    slot, bank = ClientSlot(client_id, 0), BankSlot(1, bank_slot)
    client, msgs = await connect_client(port, slot)
    if msgs[0].result is not ResultCode.OK:  # type: ignore[attr-defined]
        print("refused", flush=True)
        return 1
    print("mapped", flush=True)
    n = 0
    try:
        while True:
            if await transceive(client, SELECT_MF, slot, bank) != bytes.fromhex("9f16"):
                break
            n += 1
            if n % 20 == 0:
                print(f"ok {n}", flush=True)
            await asyncio.sleep(0.005)
    except (AssertionError, TimeoutError, ConnectionError):
        pass
    print("closed", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*(int(a) for a in sys.argv[1:4]))))
