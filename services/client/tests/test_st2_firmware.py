"""The firmware simulator behaves like the cardem firmware on the USB, seen through pyusb:
packets and zero-length packets, reads holding several messages or part of one, queued
transfers, data toggles and SET_INTERFACE's STALL, the 33-byte ATR limit, PB_AND_RX with
P3 = 0. (What the st2 client makes of it: test_st2_session.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import usb.core
import usb.util

from remsim_client.st2.protocol import (
    Config,
    DataFlags,
    RxData,
    SetAtr,
    SimSelect,
    Status,
    StatusFlags,
    StatusRequest,
    TxData,
    encode,
)
from remsim_client.st2.transfers import Completion, TransferStatus, in_transfers
from remsim_testing.st2_firmware import (
    DEFAULT_ATR,
    DroppedPacket,
    SimulatedBackend,
    SimulatedDevice,
    SimulatedModem,
    firmware_packets,
    packed_packets,
)

OUT, BULK_IN, IRQ_IN = 0x04, 0x85, 0x86
WAIT_MS = 2000  # a bounded wait for reads that must complete at once


def wait_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_MS / 1000
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class Board:
    """A SIMtrace 2 opened with pyusb, emulation on, the card powered and past its ATR."""

    def __init__(self) -> None:
        self.sim = SimulatedDevice("SIMtrace 2", bus=2, ports=(1, 1))
        self.backend = SimulatedBackend([self.sim])
        self.dev = usb.core.find(backend=self.backend)
        usb.util.claim_interface(self.dev, 0)
        self.write(SimSelect(True))
        self.modem: SimulatedModem = self.sim.modem()
        self.modem.power_on()
        self.modem.release_reset()
        assert self.modem.read_atr() == DEFAULT_ATR

    def write(self, *messages: object) -> None:
        for message in messages:
            self.dev.write(OUT, encode(message))  # type: ignore[arg-type]

    def read(self, size: int = 4096, endpoint: int = BULK_IN) -> bytes:
        return bytes(self.dev.read(endpoint, size, WAIT_MS))

    def command_data(self, length: int) -> bytes:
        """The modem sends an UPDATE BINARY with ``length`` data bytes; the host reads the
        header and answers with the ACK. Returns the RX_DATA the data will make."""
        header = bytes([0x00, 0xD6, 0, 0, length])
        self.modem.send(header)
        assert self.read() == encode(RxData(DataFlags.TPDU_HDR, header))
        self.write(TxData(DataFlags.PB_AND_RX, b"\xd6"))
        assert self.modem.receive(1) == b"\xd6"
        return encode(RxData(DataFlags.FINAL, bytes(length)))

    def close(self) -> None:
        usb.util.dispose_resources(self.dev)


@pytest.fixture
def board() -> Iterator[Board]:
    b = Board()
    yield b
    b.close()


def test_the_firmware_adds_a_zero_length_packet_only_to_a_64_byte_message() -> None:
    assert firmware_packets(bytes(21)) == [bytes(21)]
    assert firmware_packets(bytes(64)) == [bytes(64), b""]
    assert firmware_packets(bytes(128)) == [bytes(64)] * 2  # ends on a full packet
    assert firmware_packets(bytes(269)) == [bytes(64)] * 4 + [bytes(13)]
    assert packed_packets([bytes(21), bytes(43)]) == [bytes(64), b""]


def test_a_64_byte_message_ends_a_long_read_with_its_zero_length_packet(board: Board) -> None:
    rx = board.command_data(50)
    board.modem.send(bytes(50))
    assert len(rx) == 64
    assert board.read() == rx


def test_a_128_byte_message_leaves_a_long_read_waiting_for_the_next_message(
    board: Board,
) -> None:
    """No zero-length packet after a full last packet: a 4096-byte read goes on, and ends
    only with the next message's short packet, holding both."""
    rx = board.command_data(114)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(bytes(board.dev.read(BULK_IN, 4096, 0))))
    reader.start()
    wait_until(lambda: board.sim.reads_queued(BULK_IN) == 1)
    board.modem.send(bytes(114))
    assert len(rx) == 128 and board.sim.in_messages[-1].data == rx
    assert board.sim.reads_queued(BULK_IN) == 1  # still waiting, with 128 bytes in it
    board.write(StatusRequest())  # the next message on bulk IN
    reader.join(WAIT_MS / 1000)
    status = board.sim.in_messages[-1].data
    assert got == [rx + status]  # two messages in one read


def test_one_packet_reads_take_a_message_in_pieces(board: Board) -> None:
    rx = board.command_data(178)
    board.modem.send(bytes(178))
    assert [board.read(64) for _ in range(3)] == [rx[:64], rx[64:128], rx[128:]]


def test_a_read_that_times_out_returns_what_it_got_like_pyusb_on_libusb(board: Board) -> None:
    rx = board.command_data(114)
    board.modem.send(bytes(114))
    assert bytes(board.dev.read(BULK_IN, 4096, 50)) == rx
    with pytest.raises(usb.core.USBTimeoutError):
        board.dev.read(BULK_IN, 4096, 50)


def test_queued_transfers_end_in_order_one_packet_each(board: Board) -> None:
    transfers = in_transfers(board.dev)
    done: list[Completion] = []
    for _ in range(4):
        transfers.submit(BULK_IN, 64, done.append)
    assert board.sim.reads_queued(BULK_IN) == 4 and transfers.outstanding == 4
    header = bytes.fromhex("00d60000b2")
    board.modem.send(header)  # the first read takes the header
    board.write(TxData(DataFlags.PB_AND_RX, b"\xd6"))
    assert board.modem.receive(1) == b"\xd6"
    board.modem.send(bytes(178))  # the other three take the command data
    transfers.handle_events(WAIT_MS / 1000)
    rx = encode(RxData(DataFlags.FINAL, bytes(178)))
    assert [c.data for c in done] == [
        encode(RxData(DataFlags.TPDU_HDR, header)),
        rx[:64],
        rx[64:128],
        rx[128:],
    ]
    assert [m.reads_queued for m in board.sim.in_messages] == [4, 3]  # when each was sent
    assert transfers.outstanding == 0
    transfers.submit(BULK_IN, 64, done.append)
    transfers.cancel_all()
    transfers.handle_events(WAIT_MS / 1000)
    assert done[-1] == Completion(BULK_IN, TransferStatus.CANCELLED, b"")
    board.write(StatusRequest())  # nothing is waiting: the answer stays in the device
    assert len(board.read()) == 21


def test_unplugging_ends_queued_transfers_with_no_device(board: Board) -> None:
    transfers = in_transfers(board.dev)
    done: list[Completion] = []
    transfers.submit(IRQ_IN, 64, done.append, interrupt=True)
    board.sim.unplug()
    transfers.handle_events(WAIT_MS / 1000)
    assert [c.status for c in done] == [TransferStatus.NO_DEVICE]
    with pytest.raises(usb.core.USBError):
        transfers.submit(IRQ_IN, 64, done.append, interrupt=True)


def test_set_interface_is_stalled_and_resets_only_the_hosts_toggles(board: Board) -> None:
    """Linux takes the STALL as success and clears the endpoints' halt: the firmware keeps
    its toggles, so after an odd number of packets the next one on an endpoint is lost."""
    board.modem.send(bytes.fromhex("a0b0000004"))
    assert len(board.read()) == 19  # one packet each way so far (SIM_SELECT, RX_DATA)
    board.dev.set_interface_altsetting(0, 0)
    assert board.sim.set_interface_requests == 1
    slot = board.sim.slots[0]
    first, second = encode(Config(1, 0, 0x02)), encode(Config(1, 0, 0x03))
    board.dev.write(OUT, first)  # lost: the firmware takes it for a repeat
    board.dev.write(OUT, second)
    assert slot.host_messages[-1] == Config(1, 0, 0x03) and slot.presence_high
    assert Config(1, 0, 0x02) not in slot.host_messages
    board.write(StatusRequest())
    assert len(board.read()) == 21  # the second CONFIG's answer was lost, not this
    assert board.sim.dropped == [DroppedPacket(OUT, first), DroppedPacket(BULK_IN, second)]


def test_set_configuration_resets_both_sides(board: Board) -> None:
    board.write(Config(1))
    usb.util.release_interface(board.dev, 0)
    board.dev.set_configuration(1)
    usb.util.claim_interface(board.dev, 0)
    board.write(Config(1))
    assert board.sim.dropped == []


def test_a_set_atr_over_33_bytes_is_ignored(board: Board) -> None:
    board.write(SetAtr(b"\x3b" + bytes(32)))
    board.write(SetAtr(b"\x3b" + bytes(33)))
    board.modem.assert_reset()
    board.modem.release_reset()
    assert board.modem.read_atr() == b"\x3b" + bytes(32)


def test_pb_and_rx_for_p3_0_waits_for_data_that_never_comes(board: Board) -> None:
    header = bytes.fromhex("00d6000000")
    board.modem.send(header)
    assert board.read() == encode(RxData(DataFlags.TPDU_HDR, header))
    board.write(TxData(DataFlags.PB_AND_RX, b"\xd6"))
    assert board.modem.receive(1) == b"\xd6"
    assert [m.data for m in board.sim.in_messages] == [encode(RxData(DataFlags.TPDU_HDR, header))]
    with pytest.raises(usb.core.USBTimeoutError):
        board.dev.read(BULK_IN, 64, 50)  # no empty RX_DATA is invented


def test_a_status_request_is_answered_on_bulk_in(board: Board) -> None:
    board.write(StatusRequest())
    assert board.read() == encode(Status(StatusFlags.VCC_PRESENT | StatusFlags.CLK_ACTIVE))
