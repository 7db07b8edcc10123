"""The whole system with mutual TLS on every RSPRO link, every part a real process (issue 11):
remsim-server, remsim-bankd B1 on the virtual SIM bank, and the clients, each with
``--tls-cert/--tls-key/--tls-ca`` and a certificate of one throw-away CA naming it
(``urn:remsim:server``, ``urn:remsim:bankd:1``, ``urn:remsim:client:<id>``).

The card path works as in plaintext (map, ATR, APDUs, remap, unmap) for the shell client,
RemoteCard and the vpcd client. The SIM hijack of the issue, replayed with TLS on: a
connection to the bankd claiming C23:0 while C23's real client uses its card gets no ATR
and no TPDU answer, whether it holds C24's certificate, no certificate or speaks
plaintext, and the real client loses no APDU. A client sent to a bankd whose certificate
names another bank refuses it.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from remsim_bankd.sim import CardProfile
from remsim_client import RemoteCard
from remsim_testing.bankd import CLIENT_IDENTITY
from remsim_testing.pki import TestCA
from remsim_testing.rspro_peers import frame
from remsim_testing.simbank import ReaderConnection, VirtualSimBank
from rspro import (
    BankSlot,
    ClientSlot,
    ConnectClientReq,
    ConnectClientRes,
    Message,
    ResultCode,
    TpduModemToCard,
    decode,
)
from rspro.ipa import IPA_PROTO_CCM, IpaFramer
from tests.system import (
    READ_ICCID,
    SELECT_EF_ICCID,
    SELECT_MF,
    WAIT,
    RemsimSystem,
    free_port,
)

pytestmark = [pytest.mark.integration, pytest.mark.pcsc]

C23, B1_0 = ClientSlot(23, 0), BankSlot(1, 0)
MIN_APDUS = 20
"""APDUs the real client exchanges at least, before and while its slot is claimed."""


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


@pytest.fixture
def system(virtual_sim_bank: VirtualSimBank, tmp_path: Path, ca: TestCA) -> Iterator[RemsimSystem]:
    with RemsimSystem(virtual_sim_bank, tmp_path, tls=ca) as system:
        yield system


def test_map_atr_apdus_remap_unmap_over_tls(
    system: RemsimSystem, card_profiles: list[CardProfile]
) -> None:
    client = system.start_shell_client(23)
    system.map(bank_slot=0, client_id=23)
    client.expect_atr(card_profiles[0].atr)
    system.wait(lambda: system.slotmap_state(0) == "ACTIVE", "B1:0 ACTIVE")
    assert client.read_iccid() == card_profiles[0].ef_iccid

    system.unmap(0)
    system.map(bank_slot=1, client_id=23)
    client.expect_atr(card_profiles[1].atr)
    assert client.read_iccid() == card_profiles[1].ef_iccid

    system.unmap(1)
    system.wait(lambda: system.rest("GET", "/slotmaps")[1]["slotmaps"] == [], "no slotmaps")
    client.send(SELECT_MF)  # unmapped: dropped locally, no answer
    with pytest.raises(TimeoutError):
        client.expect("R-APDU: ", timeout=1.0)
    assert client.running


async def test_remote_card_over_tls(
    system: RemsimSystem, ca: TestCA, card_profiles: list[CardProfile]
) -> None:
    system.map(bank_slot=0, client_id=25)
    security = ca.issue("client-25", "urn:remsim:client:25").security()
    async with RemoteCard(
        client_id=25, port=system.rspro_port, timeout=WAIT, security=security
    ) as card:
        assert card.atr == card_profiles[0].atr
        assert (await card.transmit(bytes.fromhex(SELECT_MF)))[0] == 0x9F
        assert await card.transmit(bytes.fromhex(SELECT_EF_ICCID)) == b"\x9f\x0f"
        rsp = await card.transmit(bytes.fromhex(READ_ICCID))
        assert rsp == card_profiles[0].ef_iccid + b"\x90\x00"


@pytest.fixture
def remote_reader(virtual_sim_bank: VirtualSimBank) -> Iterator[str]:
    """Reader "Virtual PCD 00 01" emptied of its software SIM, for the remote card."""
    virtual_sim_bank.stop_card(1)
    try:
        yield virtual_sim_bank.readers[1]
    finally:
        virtual_sim_bank.start_card(1)


def test_vpcd_client_over_tls(
    virtual_sim_bank: VirtualSimBank,
    remote_reader: str,
    tmp_path: Path,
    ca: TestCA,
    card_profiles: list[CardProfile],
) -> None:
    """pyscard -> pcscd -> vpcd -> remsim-client-vpcd C24:0 =TLS=> remsim-bankd B1:0 (the
    card in reader 00 00), the slotmap held by remsim-server =TLS=."""
    with RemsimSystem(virtual_sim_bank, tmp_path, num_slots=1, tls=ca) as system:
        system.map(bank_slot=0, client_id=24)
        options = ["--vpcd-port", str(system.bank.ports[1]), "-L"]
        client = system.start_client("remsim-client-vpcd", 24, options=options)
        system.wait(lambda: system.bank.card_present(1), "the remote card in the reader")
        card = ReaderConnection(remote_reader)
        try:
            assert card.atr == card_profiles[0].atr
            assert card.tx(SELECT_MF) == b"\x9f\x16"
            assert card.tx(SELECT_EF_ICCID) == b"\x9f\x0f"
            assert card.tx(READ_ICCID) == card_profiles[0].ef_iccid + b"\x90\x00"
        finally:
            card.close()
        assert client.stop() == 0
        system.bank.wait_card(1, present=False)


# --- the SIM hijack, replayed with TLS on ---------------------------------------------------


def claim_c23(port: int, context: ssl.SSLContext | None) -> list[Message]:
    """What the bankd answers a peer that claims C23:0 and at once sends a TPDU for B1:0
    (TLS with ``context``, plaintext without), up to the bankd closing the connection."""
    received = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
            sock = raw if context is None else context.wrap_socket(raw)
            sock.sendall(
                frame(ConnectClientReq(CLIENT_IDENTITY, C23))
                + frame(TpduModemToCard(C23, B1_0, bytes.fromhex(SELECT_MF)))
            )
            while chunk := sock.recv(65536):
                received += chunk
    except OSError:  # ssl.SSLError: a TLS alert, or a reset, ends it
        pass
    frames = IpaFramer().feed(received)
    return [decode(f.payload[1:]).msg for f in frames if f.proto != IPA_PROTO_CCM]


def test_the_hijack_gets_no_atr_and_no_tpdu_answer_and_the_real_client_loses_no_apdu(
    system: RemsimSystem, ca: TestCA, card_profiles: list[CardProfile]
) -> None:
    client = system.start_shell_client(23)
    system.map(bank_slot=0, client_id=23)
    client.expect_atr(card_profiles[0].atr)
    sent = answered = 0
    hijacks_done = threading.Event()

    def real_client_session() -> None:
        nonlocal sent, answered
        while sent < MIN_APDUS or not hijacks_done.is_set():
            sent += 1
            assert client.transmit(SELECT_MF) == b"\x9f\x16"
            answered += 1

    session = threading.Thread(target=real_client_session)
    session.start()
    try:
        c24 = ca.issue("client-24", "urn:remsim:client:24").security().client_context
        no_certificate = ssl.create_default_context(cafile=ca.ca_file)
        no_certificate.check_hostname = False
        (answer,) = claim_c23(system.bankd_port, c24)  # no setAtrReq, no TPDU answer
        assert isinstance(answer, ConnectClientRes)
        assert answer.result is ResultCode.ILLEGAL_CLIENT_ID
        assert claim_c23(system.bankd_port, no_certificate) == []
        assert claim_c23(system.bankd_port, None) == []  # plaintext
    finally:
        hijacks_done.set()
        session.join(WAIT)
    assert not session.is_alive()
    assert answered == sent >= MIN_APDUS
    assert client.read_iccid() == card_profiles[0].ef_iccid  # and its session carries on
    assert system.bankd is not None
    log = system.bankd.log.read_text()
    cause = "certificate 'commonName=client-24' (client:24) claims C23:0"
    assert log.count("connectClientReq refused") == 1 and cause in log
    assert log.count("TLS handshake failed") == 2
    assert "replaced by a new connection" not in log


def test_a_client_sent_to_a_bankd_of_another_bank_refuses_it(
    virtual_sim_bank: VirtualSimBank, tmp_path: Path, ca: TestCA
) -> None:
    """The server sends C23:0 to where B1 should be, but the bankd there holds B2's
    certificate (a mix-up or a squatter): the client closes before its connectClientReq."""
    system = RemsimSystem(virtual_sim_bank, tmp_path, tls=ca)
    with ImpostorBankd(ca, system.bankd_port) as impostor:  # at the address clients are given
        try:
            system.start_server()
            system.bankd_port = free_port()  # B1 itself listens elsewhere
            system.start_bankd()
            client = system.start_shell_client(23)
            system.map(bank_slot=0, client_id=23)
            refusal = (
                f"bankd link: refusing 127.0.0.1:{impostor.port}: "
                "certificate 'commonName=bankd-2' (bankd:2), not urn:remsim:bankd:1"
            )
            system.wait(lambda: refusal in client.log.read_text(), "the client's refusal")
            client.send(SELECT_MF)  # no card: dropped locally
            with pytest.raises(TimeoutError):
                client.expect("R-APDU: ", timeout=1.0)
        finally:
            system.stop()
    assert impostor.connections >= 1 and impostor.pdus == 0  # TLS up, no connectClientReq


class ImpostorBankd:
    """A TLS listener with a certificate of the operator's CA naming bankd 2: counts the
    connections that get through TLS and the RSPRO PDUs they send."""

    def __init__(self, ca: TestCA, port: int) -> None:
        self.port = port
        self.context = ca.issue("bankd-2", "urn:remsim:bankd:2").security().server_context
        assert self.context is not None
        self.connections = self.pdus = 0
        self._listener = socket.create_server(("127.0.0.1", port))
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ImpostorBankd:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close() would not)
        self._thread.join(WAIT)
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:  # closed
                return
            received = b""
            try:
                with self.context.wrap_socket(raw, server_side=True) as sock:
                    self.connections += 1
                    sock.settimeout(WAIT)
                    while chunk := sock.recv(65536):
                        received += chunk
            except OSError:
                pass
            frames = IpaFramer().feed(received)
            self.pdus += sum(f.proto != IPA_PROTO_CCM for f in frames)
