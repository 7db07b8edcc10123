"""End to end through PC/SC on both sides, every part a real process:

    pyscard -> pcscd -> vpcd "Virtual PCD 00 01" -> remsim-client-vpcd C24:0
      -> RSPRO -> remsim-bankd B1:0 -> pcscd -> vpcd "Virtual PCD 00 00" -> remsim-vcard (card0)

with remsim-server holding the slotmap B1:0 <-> C24:0 (created through its REST API). Both
readers belong to the session's virtual SIM bank (one pcscd): its card 1 is taken out for
this module, so that reader holds the remote card instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from remsim_bankd.sim import CardProfile, Milenage
from remsim_bankd.sim.fs import USIM_AID
from remsim_testing.simbank import ReaderConnection, VirtualSimBank
from tests.system import Daemon, RemsimSystem

pytestmark = [pytest.mark.integration, pytest.mark.pcsc]

RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")


@pytest.fixture(scope="module")
def remote_reader(virtual_sim_bank: VirtualSimBank) -> Iterator[str]:
    """Reader "Virtual PCD 00 01" emptied of its software SIM, for the remote card."""
    virtual_sim_bank.stop_card(1)
    try:
        yield virtual_sim_bank.readers[1]
    finally:
        virtual_sim_bank.start_card(1)


@pytest.fixture(scope="module")
def system(
    virtual_sim_bank: VirtualSimBank, remote_reader: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RemsimSystem]:
    """remsim-server, and remsim-bankd B1 with reader 00 00 only; slotmap B1:0 <-> C24:0.
    remsim-client-vpcd processes come and go."""
    workdir = tmp_path_factory.mktemp("vpcd-client")
    with RemsimSystem(virtual_sim_bank, workdir, num_slots=1) as system:
        system.map(bank_slot=0, client_id=24)
        yield system


@pytest.fixture
def client(system: RemsimSystem, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """remsim-client-vpcd C24:0 on reader 00 01, with the test's options
    (``@pytest.mark.parametrize`` indirect)."""
    options = ["--vpcd-port", str(system.bank.ports[1]), "-L", *getattr(request, "param", ())]
    client = system.start_client("remsim-client-vpcd", 24, options=options)
    try:
        system.wait(lambda: system.bank.card_present(1), "the remote card in the reader")
        yield client
    finally:
        assert client.stop() == 0  # SIGTERM: a clean exit, and the card goes
        system.bank.wait_card(1, present=False)


@pytest.fixture
def card(client: Daemon, remote_reader: str) -> Iterator[ReaderConnection]:
    conn = ReaderConnection(remote_reader)
    yield conn
    conn.close()


def authenticate(card: ReaderConnection, autn: bytes) -> bytes:
    sw = card.tx(b"\x00\x88\x00\x81\x22\x10" + RAND + b"\x10" + autn)
    assert sw[0] == 0x61, sw.hex()
    rsp = card.tx(bytes([0x00, 0xC0, 0x00, 0x00, sw[1]]))
    assert rsp[-2:] == b"\x90\x00"
    return rsp[:-2]


def select_imsi(card: ReaderConnection) -> None:
    sw = card.tx(bytes([0x00, 0xA4, 0x04, 0x04, len(USIM_AID)]) + USIM_AID)
    assert sw[0] == 0x61, sw.hex()
    fcp = card.tx(bytes([0x00, 0xC0, 0x00, 0x00, sw[1]]))
    assert fcp[0] == 0x62 and USIM_AID in fcp
    assert card.tx("00a4000c026f07") == b"\x90\x00"


def test_pcsc_application_uses_the_remote_sim(
    card: ReaderConnection, card_profiles: list[CardProfile]
) -> None:
    from smartcard.CardConnection import CardConnection

    profile = card_profiles[0]
    assert card.atr == profile.atr  # the bankd's ATR, as the card in reader 00 00 gave it
    assert card.protocol == CardConnection.T0_protocol
    assert card.tx("a0a40000023f00") == b"\x9f\x16"  # passed through, no GET RESPONSE
    assert card.tx("a0c0000016")[-2:] == b"\x90\x00"
    assert card.tx("a0a40000022fe2") == b"\x9f\x0f"
    assert card.tx("a0b000000a")[-2:] == b"\x90\x00"
    select_imsi(card)
    assert card.tx("00b0000009") == profile.ef_imsi + b"\x90\x00"

    m = Milenage(profile.ki, profile.opc_value)
    res, ck, ik, _ = m.f2345(RAND)
    data = authenticate(card, m.autn(RAND, 1 << 20))
    if data[0] == 0xDC:
        # An earlier test of the session moved the card's SQN on: resynchronise from AUTS.
        data = authenticate(card, m.autn(RAND, m.sqn_ms(RAND, data[2:16]) + 32))
    assert data[:2] == b"\xdb\x08"
    assert data[2:10] == res
    assert data[10:27] == b"\x10" + ck
    assert data[27:44] == b"\x10" + ik


@pytest.mark.parametrize(
    ("client", "kept"),
    [((), False), (("--ignore-idle-power-cycles",), True)],
    indirect=["client"],
    ids=["power-off-forwarded", "ignore-idle-power-cycles"],
)
def test_power_off_resets_the_remote_sim_unless_ignored(
    card: ReaderConnection, card_profiles: list[CardProfile], kept: bool
) -> None:
    """vpcd cannot tell pcscd's idle power-down from an application's: SCardReconnect with
    SCARD_UNPOWER_CARD gives the same POWER OFF at once, without waiting for pcscd."""
    select_imsi(card)
    card.cold_reset()
    imsi = card.tx("00b0000009")
    if kept:
        assert imsi == card_profiles[0].ef_imsi + b"\x90\x00"  # still selected
    else:
        assert imsi[-2:] != b"\x90\x00"  # the bankd cold-reset the SIM: nothing selected


def test_the_card_leaves_the_reader_with_its_slotmap(system: RemsimSystem, client: Daemon) -> None:
    """Slotmap deleted: the bankd link goes, so does the card; back with a new slotmap."""
    system.unmap(0)
    try:
        system.bank.wait_card(1, present=False)
    finally:
        system.map(bank_slot=0, client_id=24)
    system.bank.wait_card(1, present=True)
