"""Card activity in a bankd's inventory report (``tpduCount``, ``idleMs``): the server keeps
the count and dates the last TPDU by its own clock, as it dates ``last_seen``."""

from __future__ import annotations

import rspro
from remsim_server import convert


def test_the_last_tpdu_is_dated_by_the_server_s_clock() -> None:
    wire = rspro.CardInfo(
        0, rspro.CardState.PRESENT, b"\x3b\x00", "8949", tpdu_count=7, idle_ms=1500
    )
    record = convert.card_record(1, wire, last_seen=1000.0)
    assert (record.tpdu_count, record.last_activity, record.last_seen) == (7, 998.5, 1000.0)
    idle = convert.card_record(1, rspro.CardInfo(1, rspro.CardState.EMPTY), last_seen=1000.0)
    assert (idle.tpdu_count, idle.last_activity) == (None, None)
