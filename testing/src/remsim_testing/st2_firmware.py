"""A SIMtrace2-family board in card-emulation mode, without hardware (test support).

:class:`SimulatedBackend` is a pyusb backend (``usb.backend.IBackend``): pass it to
:func:`usb.core.find` (or to the st2 selection functions) and the host code runs its normal
path - device matching, descriptors, configuration, claiming, endpoint discovery, bulk and
interrupt transfers - against :class:`SimulatedDevice` objects that present the real
descriptors of the board (simtrace2-cardem.md §1). It also offers the queued transfers of
:mod:`remsim_client.st2.transfers` (``in_transfers``), as pyusb's libusb backend does
through libusb's asynchronous API.

The USB side behaves like the firmware's, packet by packet:

* every device-to-host message is sent as one transfer of 64-byte packets, with a
  zero-length packet only when the message is exactly 64 bytes long: a message of 128, 192
  or 256 bytes ends on a full packet, and a longer host read waits for the next message;
* a host IN transfer takes packets until a short (or zero-length) one, or until it is
  full, so one read can hold several messages and one message can span several reads;
* a host OUT transfer reaches the firmware's 280-byte buffer packet by packet, and the
  firmware handles the buffer on a short packet only;
* each endpoint has data toggles on both sides. SET_INTERFACE is STALLed (the firmware has
  no alternate settings) and handled as Linux does: success, with the halt of each of the
  interface's endpoints cleared, which resets the host's toggles and not the firmware's. A
  packet whose toggle does not match is lost (:attr:`SimulatedDevice.dropped`).

Behind it each card-emulation slot runs :class:`FirmwareSlot`, the firmware's card_emu
state machine at message level (§6): SIM_SELECT enabling, VCC/CLK/RST tracking with STATUS
on the interrupt endpoint, the ATR after reset, PPS echo with a PTS message, TPDU headers and
command data as RX_DATA, TX_DATA queued and transmitted with the procedure-byte flags,
FINAL, the drop-when-not-ready rule, a SET_ATR over 33 bytes ignored, and a PB_AND_RX for
P3 = 0 that waits for data which never comes. A :class:`SimulatedModem` plays the phone on
the slot's ISO 7816 side: it powers and resets the card and exchanges T=0 TPDUs.

Not simulated: time, but for the ATR's (:meth:`SimulatedModem.read_atr`). The firmware
sends no NULL procedure bytes and has no waiting time; the modem waits (with a timeout)
instead. All methods are thread-safe; the modem's blocking
calls belong on a thread (``await asyncio.to_thread(modem.transact, apdu)``).
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, auto

import usb.backend
import usb.core
import usb.util

from remsim_client.st2.errors import ProtocolError, St2Error
from remsim_client.st2.framing import PACKET_SIZE
from remsim_client.st2.protocol import (
    FEATURE_STATUS_IRQ,
    MAX_ATR_LEN,
    MAX_OUT_TRANSFER,
    PRES_POL_PRES_H,
    PRES_POL_VALID,
    CardInsert,
    Config,
    DataFlags,
    Message,
    ModemReset,
    Pts,
    RxData,
    SetAtr,
    SimSelect,
    Status,
    StatusFlags,
    StatusRequest,
    TxData,
    encode,
    iter_messages,
)
from remsim_client.st2.transfers import Callback, Completion, TransferStatus
from remsim_client.st2.usb import BOARDS, CARDEM_CLASS, VENDOR_ID, Board

__all__ = [
    "DEFAULT_ATR",
    "DroppedPacket",
    "FirmwareSlot",
    "InMessage",
    "ModemError",
    "SimulatedBackend",
    "SimulatedDevice",
    "SimulatedModem",
    "SimulatedTransfers",
    "firmware_packets",
    "packed_packets",
]

log = logging.getLogger("remsim.testing.st2_firmware")

#: The firmware's ATR before any SET_ATR.
DEFAULT_ATR = bytes.fromhex("3b8080811fc759")
_PACKET = PACKET_SIZE  # wMaxPacketSize of every cardem endpoint (full speed)
# Endpoint addresses per slot: bulk OUT, bulk IN, interrupt IN (simtrace2-cardem.md §1.1).
_SLOT_ENDPOINTS = ((0x04, 0x85, 0x86), (0x01, 0x82, 0x83))
_D_FACTORS = {1: 1, 2: 2, 3: 4, 4: 8, 5: 16, 6: 32, 7: 64, 8: 12, 9: 20}


class ModemError(St2Error):
    """The simulated modem saw no answer in time, or a T=0 protocol violation."""


def _usb_error(code: int, err: int, text: str) -> usb.core.USBError:
    return usb.core.USBError(text, code, err)


def _no_device() -> usb.core.USBError:
    return _usb_error(-4, errno.ENODEV, "No such device (it may have been disconnected)")


def _pieces(data: bytes) -> list[bytes]:
    return [data[i : i + _PACKET] for i in range(0, len(data), _PACKET)]


def firmware_packets(message: bytes) -> list[bytes]:
    """The packets the firmware sends one message as: 64-byte pieces, and a zero-length
    packet only when the message is exactly one packet long."""
    packets = _pieces(message)
    return [*packets, b""] if len(message) == _PACKET else packets


def packed_packets(messages: Iterable[bytes]) -> list[bytes]:
    """Messages back to back in shared packets, as a device that packs them into one
    transfer would send them (the firmware never does)."""
    data = b"".join(messages)
    packets = _pieces(data)
    return [*packets, b""] if len(data) % _PACKET == 0 else packets


# --- packets on the USB ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InMessage:
    """A message the device sent to the host, and how many host reads were queued on its
    endpoint at that moment (submitted, not completed)."""

    endpoint: int
    data: bytes
    reads_queued: int


@dataclass(frozen=True, slots=True)
class DroppedPacket:
    """A packet lost to a data-toggle mismatch: the receiver took it for a repeat."""

    endpoint: int
    data: bytes


@dataclass(eq=False)
class _Transfer:
    """One host IN transfer."""

    endpoint: int
    length: int
    sink: Callable[[_Transfer], None]  # told once the transfer has ended
    data: bytearray = field(default_factory=bytearray)
    status: TransferStatus | None = None  # None while pending
    callback: Callback | None = None


@dataclass(eq=False)
class _Endpoint:
    address: int
    device_toggle: int = 0
    host_toggle: int = 0
    packets: deque[bytes] = field(default_factory=deque)  # IN: sent by the device, not taken
    transfers: deque[_Transfer] = field(default_factory=deque)  # IN: host reads, in order

    def toggle_matches(self) -> bool:
        """A packet goes over the bus: does the receiver take it? The sender's toggle flips
        (it got its ACK either way), the receiver's only if the toggles matched; otherwise
        the receiver drops the packet as a repeat of the last one."""
        matches = self.device_toggle == self.host_toggle
        if self.address & 0x80:  # IN: the device sends
            self.device_toggle ^= 1
            self.host_toggle ^= int(matches)
        else:
            self.host_toggle ^= 1
            self.device_toggle ^= int(matches)
        return matches


# --- descriptors (the attributes pyusb reads from a backend) -----------------------------


@dataclass
class EndpointDescriptor:
    bEndpointAddress: int
    bmAttributes: int
    bInterval: int = 0
    wMaxPacketSize: int = _PACKET
    bLength: int = 7
    bDescriptorType: int = usb.util.DESC_TYPE_ENDPOINT
    bRefresh: int = 0
    bSynchAddress: int = 0
    extra_descriptors: list[int] = field(default_factory=list)


@dataclass
class InterfaceDescriptor:
    bInterfaceNumber: int
    bInterfaceClass: int
    bInterfaceSubClass: int
    bInterfaceProtocol: int
    iInterface: int
    endpoints: list[EndpointDescriptor] = field(default_factory=list)
    bAlternateSetting: int = 0
    bLength: int = 9
    bDescriptorType: int = usb.util.DESC_TYPE_INTERFACE
    extra_descriptors: list[int] = field(default_factory=list)

    @property
    def bNumEndpoints(self) -> int:
        return len(self.endpoints)


@dataclass
class ConfigurationDescriptor:
    bConfigurationValue: int
    iConfiguration: int
    interfaces: list[list[InterfaceDescriptor]]  # per interface: its alternate settings
    bmAttributes: int = 0x80  # bus powered
    bMaxPower: int = 150  # 300 mA
    bLength: int = 9
    bDescriptorType: int = usb.util.DESC_TYPE_CONFIG
    extra_descriptors: list[int] = field(default_factory=list)

    @property
    def bNumInterfaces(self) -> int:
        return len(self.interfaces)

    @property
    def wTotalLength(self) -> int:
        alts = [alt for interface in self.interfaces for alt in interface]
        return self.bLength + sum(
            alt.bLength + len(alt.extra_descriptors) + 7 * alt.bNumEndpoints for alt in alts
        )


@dataclass
class DeviceDescriptor:
    idVendor: int
    idProduct: int
    bNumConfigurations: int
    bus: int
    address: int
    port_numbers: tuple[int, ...]
    bcdDevice: int = 0x0002
    iManufacturer: int = 1
    iProduct: int = 2
    iSerialNumber: int = 3
    bcdUSB: int = 0x0200
    bDeviceClass: int = 0
    bDeviceSubClass: int = 0
    bDeviceProtocol: int = 0
    bMaxPacketSize0: int = 64
    bLength: int = 18
    bDescriptorType: int = usb.util.DESC_TYPE_DEVICE
    speed: int = usb.util.SPEED_FULL

    @property
    def port_number(self) -> int:
        return self.port_numbers[-1] if self.port_numbers else 0


# A DFU functional descriptor (run-time DFU interface of the cardem builds).
_DFU_FUNCTIONAL = [0x09, 0x21, 0x0B, 0xFF, 0x00, 0x00, 0x01, 0x10, 0x01]


# --- the firmware ---------------------------------------------------------------------


class _Iso(Enum):
    POWER_OFF = auto()  # no VCC (or emulation disabled)
    WAIT_RST = auto()  # powered, the ATR waits for RST to be released
    WAIT_TPDU = auto()  # ATR sent: expecting CLA (or PPS)
    PPS = auto()
    WAIT_PB = auto()  # header passed to the host; waiting for its procedure byte
    WAIT_TX = auto()  # transmitting response data / status word
    WAIT_RX = auto()  # receiving P3 bytes of command data


class FirmwareSlot:
    """One card-emulation instance (USB interface) of the firmware."""

    def __init__(self, device: SimulatedDevice, index: int) -> None:
        self.device = device
        self.index = index
        self.out_ep, self.in_ep, self.irq_ep = _SLOT_ENDPOINTS[index]
        self.modem = SimulatedModem(self)
        # settings from the host
        self.enabled = False  # SIM_SELECT remote
        self.atr = DEFAULT_ATR
        self.features = 0
        self.presence_high = True
        self.card_inserted = False
        #: Every bulk OUT transfer the host sent to this slot, and every message the
        #: firmware took from them, in order.
        self.transfers: list[bytes] = []
        self.host_messages: list[Message] = []
        #: Host input the firmware could not use (bad framing, oversized transfers).
        self.errors: list[str] = []
        # ISO 7816 side
        self.state = _Iso.POWER_OFF
        self.vcc = self.clk = self.rst = False  # as reported (masked by `enabled`)
        self.f_index, self.d_index, self.wi = 1, 1, 10
        self._header = bytearray()
        self._p3 = 0
        self._rx = bytearray()
        self._pps = bytearray()
        self._tx: deque[tuple[DataFlags, bytearray]] = deque()
        self._out = bytearray()
        self.to_modem = bytearray()

    @property
    def board(self) -> Board:
        return self.device.board

    # host side --------------------------------------------------------------------

    def out_packet(self, packet: bytes) -> None:
        """One OUT packet into the 280-byte buffer; a short packet completes the read."""
        self._out += packet
        if len(self._out) > MAX_OUT_TRANSFER:
            self.errors.append(f"OUT data of {len(self._out)} bytes overflows the buffer")
            self._out.clear()
            return
        if len(packet) == _PACKET:
            return  # no short packet yet: the firmware's read has not completed
        buf, self._out = bytes(self._out), bytearray()
        try:
            for msg in iter_messages(buf):
                self.host_messages.append(msg)
                self._command(msg)
        except ProtocolError as exc:
            self.errors.append(f"{exc}: {buf.hex()}")

    def _to_host(self, endpoint: int, msg: Message) -> None:
        data = encode(msg)
        self.device.send_in(endpoint, data, firmware_packets(data))

    def send_packed(self, *messages: Message) -> None:
        """Send messages on bulk IN back to back, sharing packets, as a device that packs
        its messages into one transfer would (several messages in one packet, messages
        across packet boundaries). The firmware never does this."""
        data = [encode(msg) for msg in messages]
        self.device.send_in(self.in_ep, b"".join(data), packed_packets(data))

    def _command(self, msg: Message) -> None:
        match msg:
            case TxData(flags, data):
                if self.state in (_Iso.POWER_OFF, _Iso.WAIT_RST):
                    log.info("slot %d: TX_DATA while not ready; dropped", self.index)
                    return
                self._tx.append((flags, bytearray(data)))
                self._transmit()
            case SetAtr(atr):
                if len(atr) <= MAX_ATR_LEN:
                    self.atr = atr
            case StatusRequest():
                self._to_host(self.in_ep, self._status())
            case CardInsert(inserted):
                if self.board.card_insert:
                    self.card_inserted = inserted
            case Config(features, _mux, pres_pol):
                self.features = features & FEATURE_STATUS_IRQ
                if pres_pol & PRES_POL_VALID:
                    self.presence_high = bool(pres_pol & PRES_POL_PRES_H)
                polarity = PRES_POL_VALID | (PRES_POL_PRES_H if self.presence_high else 0)
                self._to_host(self.in_ep, Config(self.features, 0, polarity))
            case ModemReset():
                if self.board.modem_reset:
                    self.modem.reset_pulses.append(msg)
            case SimSelect(remote):
                self.enabled = remote
                self.update_lines()
            case _:
                log.info("slot %d: ignoring %r", self.index, msg)

    def _status(self) -> Status:
        flags = StatusFlags.NONE
        if self.vcc:
            flags |= StatusFlags.VCC_PRESENT
        if self.clk:
            flags |= StatusFlags.CLK_ACTIVE
        if self.rst:
            flags |= StatusFlags.RESET_ACTIVE
        mv = self.modem.voltage_mv if self.board.measures_vcc and self.vcc else 0
        waiting_time = self.wi * 960 * _D_FACTORS.get(self.d_index, 1)
        return Status(flags, mv, self.f_index, self.d_index, self.wi, waiting_time)

    def _report(self) -> None:
        if self.features & FEATURE_STATUS_IRQ:
            self._to_host(self.irq_ep, self._status())

    # ISO 7816 side -------------------------------------------------------------------

    def update_lines(self) -> None:
        """Re-evaluate VCC/CLK/RST from the modem's lines, masked by `enabled`."""
        vcc = self.enabled and self.modem.vcc
        rst = self.enabled and self.modem.rst
        if vcc != self.vcc:
            self.vcc = vcc
            if not vcc:
                self._discard(_Iso.POWER_OFF)
            self._report()
        if vcc != self.clk:  # the clock follows VCC, reported as a change of its own
            self.clk = vcc
            if vcc:
                self._discard(_Iso.WAIT_RST)
            self._report()
        if rst != self.rst:
            self.rst = rst
            self._report()
            if rst and self.state != _Iso.POWER_OFF:
                self._discard(_Iso.WAIT_RST)
            elif not rst and self.state == _Iso.WAIT_RST:
                self._answer_to_reset()

    def _discard(self, state: _Iso) -> None:
        self.state = state
        self._tx.clear()
        self._header.clear()
        self._rx.clear()
        self._pps.clear()
        self.to_modem.clear()  # the modem's UART starts afresh too

    def _answer_to_reset(self) -> None:
        self.f_index, self.d_index, self.wi = 1, 1, 10
        self.to_modem += self.atr
        self.state = _Iso.WAIT_TPDU

    def from_modem(self, data: bytes) -> None:
        for byte in data:
            self._receive(byte)

    def _receive(self, byte: int) -> None:
        if self.state == _Iso.WAIT_TPDU:
            if not self._header and byte == 0xFF:
                self.state = _Iso.PPS
                self._pps[:] = b"\xff"
                return
            self._header.append(byte)
            if len(self._header) == 5:
                self._p3 = self._header[4]
                self._to_host(self.in_ep, RxData(DataFlags.TPDU_HDR, bytes(self._header)))
                self._header.clear()
                self.state = _Iso.WAIT_PB
        elif self.state == _Iso.PPS:
            self._pps.append(byte)
            if len(self._pps) >= 2 and len(self._pps) == 3 + bin(self._pps[1] & 0x70).count("1"):
                self._pps_complete()
        elif self.state == _Iso.WAIT_RX:
            self._rx.append(byte)
            if len(self._rx) == self._p3:
                self._command_data_complete()
        else:
            log.info("slot %d: modem sent %02x in %s; ignored", self.index, byte, self.state)

    def _pps_complete(self) -> None:
        pps, self.state = bytes(self._pps), _Iso.WAIT_TPDU
        self._pps.clear()
        check = 0
        for byte in pps:
            check ^= byte
        if check:
            return  # bad PCK: dropped silently
        self.to_modem += pps  # echo = accept
        if pps[1] & 0x10:
            self.f_index, self.d_index = pps[2] >> 4, pps[2] & 0x0F
        self._to_host(self.in_ep, Pts(len(pps), pps, pps))

    def _command_data_complete(self) -> None:
        self._to_host(self.in_ep, RxData(DataFlags.FINAL, bytes(self._rx)))
        self._rx.clear()
        self.state = _Iso.WAIT_TX
        self._transmit()

    def _transmit(self) -> None:
        """Drain queued TX_DATA byte by byte, following the procedure-byte flags."""
        while self._tx and self.state in (_Iso.WAIT_PB, _Iso.WAIT_TX):
            flags, data = self._tx[0]
            self.to_modem.append(data.pop(0))
            if self.state == _Iso.WAIT_PB:
                if flags & DataFlags.PB_AND_TX:
                    self.state = _Iso.WAIT_TX
                elif flags & DataFlags.PB_AND_RX:
                    self.state = _Iso.WAIT_RX
            if data:
                continue
            self._tx.popleft()
            if flags & DataFlags.PB_AND_RX:
                # Waits for P3 bytes; with P3 = 0 for data that never comes (the firmware
                # does not invent an empty RX_DATA).
                self.state = _Iso.WAIT_RX
            elif flags & DataFlags.FINAL:
                self.state = _Iso.WAIT_TPDU


# --- the modem ------------------------------------------------------------------------


class SimulatedModem:
    """The phone on one slot's ISO 7816 side (blocking calls; use from a thread)."""

    def __init__(self, slot: FirmwareSlot, timeout: float = 5.0) -> None:
        self._slot = slot
        self.timeout = timeout
        self.vcc = False
        self.rst = True  # nRST held low while the SIM is unpowered
        self.voltage_mv = 1800
        #: MODEM_RESET requests received on boards that can reset the modem.
        self.reset_pulses: list[ModemReset] = []
        #: Everything the card sent during the last :meth:`transact`.
        self.last_wire = b""

    @property
    def _cond(self) -> threading.Condition:
        return self._slot.device.cond

    def _lines(self, vcc: bool, rst: bool) -> None:
        with self._cond:
            self.vcc, self.rst = vcc, rst
            self._slot.update_lines()
            self._cond.notify_all()

    def power_on(self) -> None:
        """Apply VCC and clock, keeping RST asserted."""
        self._lines(True, True)

    def power_off(self) -> None:
        self._lines(False, True)

    def assert_reset(self) -> None:
        self._lines(self.vcc, True)

    def release_reset(self) -> None:
        self._lines(self.vcc, False)

    @property
    def card_present(self) -> bool | None:
        """The card-presence line as the modem sees it; None if the board has none."""
        with self._cond:
            return self._slot.card_inserted if self._slot.board.card_insert else None

    def send(self, data: bytes) -> None:
        with self._cond:
            self._slot.from_modem(data)
            self._cond.notify_all()

    def receive(self, count: int, timeout: float | None = None) -> bytes:
        """Wait for ``count`` bytes from the card."""
        buf = self._slot.to_modem
        with self._cond:
            if not self._cond.wait_for(lambda: len(buf) >= count, timeout or self.timeout):
                raise ModemError(f"card sent {buf.hex() or 'nothing'}, expected {count} bytes")
            data = bytes(buf[:count])
            del buf[:count]
            return data

    def read_atr(self, timeout: float | None = None) -> bytes:
        """The ATR, which the firmware sends in one go after RST is released.

        The one piece of time simulated: an ATR takes tens of milliseconds, and the host
        polls the interrupt endpoint every millisecond, so the modem has the ATR (and can
        send a command) only once the host has taken the STATUS messages sent before it.
        """
        buf = self._slot.to_modem
        irq = self._slot.device.endpoints[self._slot.irq_ep]
        with self._cond:
            if not self._cond.wait_for(lambda: bool(buf), timeout or self.timeout):
                raise ModemError("no ATR")
            if not self._cond.wait_for(lambda: not irq.packets, timeout or self.timeout):
                raise ModemError("the host does not read the interrupt endpoint")
            atr = bytes(buf)
            buf.clear()
            return atr

    def cold_reset(self, timeout: float | None = None) -> bytes:
        """Power cycle the card and return its ATR."""
        self.power_off()
        self.power_on()
        self.release_reset()
        return self.read_atr(timeout)

    def warm_reset(self, timeout: float | None = None) -> bytes:
        self.assert_reset()
        self.release_reset()
        return self.read_atr(timeout)

    def pps(self, request: bytes, timeout: float | None = None) -> bytes:
        """Send a PPS request; returns the card's answer."""
        self.send(request)
        return self.receive(len(request), timeout)

    def transact(self, apdu: bytes, timeout: float | None = None) -> bytes:
        """One T=0 command: header, command data after the ACK; returns data + SW."""
        header, data = apdu[:5], apdu[5:]
        if len(header) != 5:
            raise ModemError("a T=0 command needs a 5-byte header")
        ins, p3 = header[1], header[4]
        wire = bytearray()
        response = bytearray()
        self.send(header)
        try:
            while True:
                wire += self.receive(1, timeout)
                pb = wire[-1]
                if pb == 0x60:  # NULL: keep waiting
                    continue
                if pb == ins:
                    if data:
                        self.send(data)
                        data = b""
                    elif response or len(apdu) > 5:
                        raise ModemError(f"unexpected ACK after {wire.hex()}")
                    else:
                        response += self.receive(p3 or 256, timeout)
                        wire += response
                    continue
                if pb & 0xF0 in (0x60, 0x90):
                    wire += self.receive(1, timeout)
                    return bytes(response) + bytes(wire[-2:])
                raise ModemError(f"bad procedure byte {pb:02x} after {wire[:-1].hex()}")
        finally:
            self.last_wire = bytes(wire)


# --- the device and the pyusb backend ----------------------------------------------------


def _cardem_interface(slot: int, string: int) -> list[InterfaceDescriptor]:
    out, bulk_in, irq = _SLOT_ENDPOINTS[slot]
    endpoints = [
        EndpointDescriptor(out, usb.util.ENDPOINT_TYPE_BULK),
        EndpointDescriptor(bulk_in, usb.util.ENDPOINT_TYPE_BULK),
        EndpointDescriptor(irq, usb.util.ENDPOINT_TYPE_INTR, bInterval=1),
    ]
    return [InterfaceDescriptor(slot, *CARDEM_CLASS, 0x00, string, endpoints)]


class SimulatedDevice:
    """A board as the USB host sees it, with one :class:`FirmwareSlot` per cardem slot."""

    _STRINGS = (
        "sysmocom - s.f.m.c. GmbH",  # 1 manufacturer
        "",  # 2 product (the board name)
        "",  # 3 serial number
        "SIMtrace Card Emulation",  # 4 configuration 1
        "",  # 5 configuration 2 / version interface: the firmware version
        "CardEmulator Modem 1",  # 6
        "CardEmulator Modem 2",  # 7
        "DFU (Device Firmware Upgrade)",  # 8
    )

    def __init__(
        self,
        board: str | Board = "SIMtrace 2",
        *,
        bus: int = 1,
        address: int = 5,
        ports: Sequence[int] = (1,),
        serial: str | None = None,
        version: str = "0.9.1-22-gf5eead5",
    ) -> None:
        self.board = board if isinstance(board, Board) else _board(board)
        #: Seconds each OUT transfer takes (a slow or NAKing device).
        self.latency = 0.0
        #: Endpoint addresses that answer with a STALL.
        self.halted: set[int] = set()
        self.cond = threading.Condition()
        self.plugged = True
        self.configuration = 1  # Linux configures the device when it enumerates
        self.claimed: set[int] = set()
        #: SET_INTERFACE requests, all STALLed by the firmware.
        self.set_interface_requests = 0
        #: Every message the device sent the host, with the host reads queued for it.
        self.in_messages: list[InMessage] = []
        #: Every host IN transfer that ended, with what it received.
        self.reads_done: list[Completion] = []
        #: Packets lost to a data-toggle mismatch.
        self.dropped: list[DroppedPacket] = []
        self.slots = [FirmwareSlot(self, i) for i in range(self.board.slots)]
        self.endpoints = {
            address: _Endpoint(address)
            for slot in self.slots
            for address in _SLOT_ENDPOINTS[slot.index]
        }
        serial = serial or f"{bus:08x}{address:08x}{sum(ports):08x}5a5a5a5a"
        strings = list(self._STRINGS)
        strings[1], strings[2], strings[4] = self.board.name, serial, version
        self.strings = strings
        cardem = [_cardem_interface(i, 6 + i) for i in range(self.board.slots)]
        dfu = InterfaceDescriptor(
            len(cardem), 0xFE, 0x01, 0x01, 8, extra_descriptors=_DFU_FUNCTIONAL
        )
        self.configs = [
            ConfigurationDescriptor(1, 4, [*cardem, [dfu]]),
            ConfigurationDescriptor(2, 5, [[InterfaceDescriptor(0, 0xFF, 0xFF, 0xFF, 5)]]),
        ]
        self.descriptor = DeviceDescriptor(
            VENDOR_ID, self.board.product_id, len(self.configs), bus, address, tuple(ports)
        )

    def __repr__(self) -> str:
        d = self.descriptor
        return f"<SimulatedDevice {self.board.name} {d.bus}-{'.'.join(map(str, d.port_numbers))}>"

    def modem(self, slot: int = 0) -> SimulatedModem:
        return self.slots[slot].modem

    def reads_queued(self, endpoint: int) -> int:
        """Host IN transfers submitted on ``endpoint`` and not completed."""
        with self.cond:
            return len(self.endpoints[endpoint].transfers)

    def unplug(self) -> None:
        """Pull the cable: pending transfers end with 'no device', later ones fail."""
        with self.cond:
            self.plugged = False
            for ep in self.endpoints.values():
                while ep.transfers:
                    self._end(ep, ep.transfers[0], TransferStatus.NO_DEVICE)
            self.cond.notify_all()

    def _slot_for(self, endpoint: int) -> FirmwareSlot:
        if self.configuration == 1:
            for slot in self.slots:
                if endpoint in (slot.out_ep, slot.in_ep, slot.irq_ep):
                    return slot
        raise _usb_error(-5, errno.ENOENT, f"Entity not found (endpoint {endpoint:#04x})")

    def reset_toggles(self, interface: int | None = None, *, device_too: bool) -> None:
        """SET_CONFIGURATION resets both sides' toggles; a cleared halt only the host's
        (the firmware resets its own only for an endpoint that was halted)."""
        with self.cond:
            for slot in self.slots:
                if interface is not None and slot.index != interface:
                    continue
                for address in _SLOT_ENDPOINTS[slot.index]:
                    ep = self.endpoints[address]
                    ep.host_toggle = 0
                    if device_too:
                        ep.device_toggle = 0

    # host to device -----------------------------------------------------------------

    def write(self, endpoint: int, data: bytes) -> int:
        if self.latency:
            time.sleep(self.latency)
        with self.cond:
            if not self.plugged:
                raise _no_device()
            slot = self._slot_for(endpoint)
            if endpoint != slot.out_ep or endpoint in self.halted:
                raise _usb_error(-9, errno.EPIPE, "Pipe error")
            slot.transfers.append(data)
            ep = self.endpoints[endpoint]
            for packet in _pieces(data) or [b""]:  # libusb sends no zero-length packet
                if ep.toggle_matches():
                    slot.out_packet(packet)
                else:
                    self.dropped.append(DroppedPacket(endpoint, packet))
            self.cond.notify_all()
            return len(data)

    # device to host -----------------------------------------------------------------

    def send_in(self, endpoint: int, data: bytes, packets: list[bytes]) -> None:
        """The firmware sends ``data`` (one message or several) as ``packets``."""
        with self.cond:
            ep = self.endpoints[endpoint]
            self.in_messages.append(InMessage(endpoint, data, len(ep.transfers)))
            ep.packets.extend(packets)
            self._pump(ep)

    def _pump(self, ep: _Endpoint) -> None:
        """Hand the endpoint's packets to the host's queued transfers, oldest first."""
        while ep.transfers and ep.packets:
            packet = ep.packets.popleft()
            if not ep.toggle_matches():
                self.dropped.append(DroppedPacket(ep.address, packet))
                continue
            transfer = ep.transfers[0]
            if len(transfer.data) + len(packet) > transfer.length:
                self._end(ep, transfer, TransferStatus.OVERFLOW)  # babble: the packet is lost
                continue
            transfer.data += packet
            if len(packet) < _PACKET or len(transfer.data) == transfer.length:
                self._end(ep, transfer, TransferStatus.COMPLETED)  # a short packet, or full

    def _end(self, ep: _Endpoint, transfer: _Transfer, status: TransferStatus) -> None:
        ep.transfers.remove(transfer)
        transfer.status = status
        self.reads_done.append(Completion(transfer.endpoint, status, bytes(transfer.data)))
        transfer.sink(transfer)
        self.cond.notify_all()

    def submit_in(self, endpoint: int, length: int, sink: Callable[[_Transfer], None]) -> _Transfer:
        """Queue a host IN transfer; ``sink`` is told when it has ended."""
        with self.cond:
            if not self.plugged:
                raise _no_device()
            slot = self._slot_for(endpoint)
            if endpoint not in (slot.in_ep, slot.irq_ep) or endpoint in self.halted:
                raise _usb_error(-9, errno.EPIPE, "Pipe error")
            ep = self.endpoints[endpoint]
            transfer = _Transfer(endpoint, length, sink)
            ep.transfers.append(transfer)
            self._pump(ep)
            return transfer

    def cancel(
        self, transfer: _Transfer, status: TransferStatus = TransferStatus.CANCELLED
    ) -> None:
        """End a pending transfer with what it has received so far."""
        with self.cond:
            ep = self.endpoints[transfer.endpoint]
            if transfer in ep.transfers:
                self._end(ep, transfer, status)

    def end_interface_transfers(self, interface: int) -> None:
        """The interface is released: the kernel ends the transfers pending on it (a packet
        the device still holds stays for the next read)."""
        with self.cond:
            for address in _SLOT_ENDPOINTS[interface] if interface < len(self.slots) else ():
                ep = self.endpoints[address]
                while ep.transfers:
                    self._end(ep, ep.transfers[0], TransferStatus.ERROR)

    def read(self, endpoint: int, buff: array[int], timeout_ms: int) -> int:
        """A blocking IN transfer, as libusb's: it takes packets until a short one or until
        ``buff`` is full, and waits (``timeout_ms`` 0: for ever) until then. On a timeout
        it returns what it got if anything, like pyusb on libusb."""
        done: list[_Transfer] = []
        with self.cond:
            transfer = self.submit_in(endpoint, len(buff), done.append)
            if not self.cond.wait_for(lambda: done, timeout_ms / 1000 if timeout_ms else None):
                self.cancel(transfer, TransferStatus.TIMED_OUT)
        status, data = transfer.status, bytes(transfer.data)
        if status is TransferStatus.TIMED_OUT and not data:
            raise usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT)
        if status is TransferStatus.NO_DEVICE:
            raise _no_device()
        if status is TransferStatus.OVERFLOW:
            raise _usb_error(-8, errno.EOVERFLOW, "Overflow")
        if status is TransferStatus.ERROR:
            raise _usb_error(-1, errno.ESHUTDOWN, "Input/Output Error (interface released)")
        buff[: len(data)] = array("B", data)
        return len(data)

    def string_descriptor(self, index: int) -> bytes:
        if index == 0:
            return bytes([4, usb.util.DESC_TYPE_STRING, 0x09, 0x04])  # en-US
        if not 0 < index <= len(self.strings):
            raise _usb_error(-9, errno.EPIPE, "Pipe error")
        text = self.strings[index - 1].encode("utf-16-le")
        return bytes([2 + len(text), usb.util.DESC_TYPE_STRING]) + text


def _board(name: str) -> Board:
    for board in BOARDS:
        if board.name == name:
            return board
    raise ValueError(f"unknown board {name!r}; known: {', '.join(b.name for b in BOARDS)}")


@dataclass(eq=False)
class _Handle:
    device: SimulatedDevice
    claimed: set[int] = field(default_factory=set)
    closed: bool = False


class SimulatedTransfers:
    """Queued IN transfers on a simulated device (remsim_client.st2.transfers.InTransfers):
    the callbacks run in :meth:`handle_events`, in the order the transfers ended."""

    def __init__(self, backend: SimulatedBackend, handle: _Handle) -> None:
        self._backend = backend
        self._handle = handle
        self._device = handle.device
        self._pending: set[_Transfer] = set()  # submitted, callback not run yet
        self._ended: deque[_Transfer] = deque()
        self._interrupted = False

    @property
    def outstanding(self) -> int:
        with self._device.cond:
            return len(self._pending)

    def submit(
        self, endpoint: int, length: int, callback: Callback, *, interrupt: bool = False
    ) -> None:
        dev = self._device
        with dev.cond:
            self._backend.check_claimed(self._handle, dev._slot_for(endpoint).index)
            transfer = dev.submit_in(endpoint, length, self._ended.append)
            transfer.callback = callback
            self._pending.add(transfer)

    def cancel_all(self) -> None:
        with self._device.cond:
            for transfer in list(self._pending):
                self._device.cancel(transfer)

    def interrupt(self) -> None:
        with self._device.cond:
            self._interrupted = True
            self._device.cond.notify_all()

    def handle_events(self, timeout: float) -> None:
        with self._device.cond:
            self._device.cond.wait_for(lambda: self._ended or self._interrupted, timeout)
            ended = list(self._ended)
            self._ended.clear()
            self._interrupted = False
        for transfer in ended:  # outside the lock, as libusb runs callbacks
            assert transfer.status is not None and transfer.callback is not None
            with self._device.cond:
                self._pending.discard(transfer)
            transfer.callback(Completion(transfer.endpoint, transfer.status, bytes(transfer.data)))


class SimulatedBackend(usb.backend.IBackend):  # type: ignore[misc]
    """A pyusb backend whose bus holds :class:`SimulatedDevice` objects."""

    def __init__(self, devices: Iterable[SimulatedDevice] = ()) -> None:
        self.devices = list(devices)

    def plug(self, device: SimulatedDevice) -> None:
        self.devices.append(device)

    def unplug(self, device: SimulatedDevice) -> None:
        device.unplug()
        self.devices.remove(device)

    # descriptors -------------------------------------------------------------------

    def enumerate_devices(self) -> list[SimulatedDevice]:
        return [dev for dev in self.devices if dev.plugged]

    def get_parent(self, dev: SimulatedDevice) -> None:
        return None

    def get_device_descriptor(self, dev: SimulatedDevice) -> DeviceDescriptor:
        return dev.descriptor

    def get_configuration_descriptor(
        self, dev: SimulatedDevice, config: int
    ) -> ConfigurationDescriptor:
        return dev.configs[config]

    def get_interface_descriptor(
        self, dev: SimulatedDevice, intf: int, alt: int, config: int
    ) -> InterfaceDescriptor:
        return dev.configs[config].interfaces[intf][alt]  # IndexError ends pyusb's iteration

    def get_endpoint_descriptor(
        self, dev: SimulatedDevice, ep: int, intf: int, alt: int, config: int
    ) -> EndpointDescriptor:
        return dev.configs[config].interfaces[intf][alt].endpoints[ep]

    # device handles ----------------------------------------------------------------

    def _device(self, handle: _Handle) -> SimulatedDevice:
        if handle.closed:
            raise _usb_error(-2, errno.EINVAL, "Invalid parameter (closed handle)")
        if not handle.device.plugged:
            raise _no_device()
        return handle.device

    def open_device(self, dev: SimulatedDevice) -> _Handle:
        if not dev.plugged:
            raise _no_device()
        return _Handle(dev)

    def close_device(self, dev_handle: _Handle) -> None:
        dev = dev_handle.device
        with dev.cond:
            for intf in dev_handle.claimed:
                dev.end_interface_transfers(intf)
            dev.claimed -= dev_handle.claimed
            dev_handle.claimed.clear()
            dev_handle.closed = True

    def get_configuration(self, dev_handle: _Handle) -> int:
        return self._device(dev_handle).configuration

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        dev = self._device(dev_handle)
        with dev.cond:
            if config_value not in (0, *(c.bConfigurationValue for c in dev.configs)):
                raise _usb_error(-9, errno.EPIPE, "Pipe error")
            if dev.claimed:
                raise _usb_error(-6, errno.EBUSY, "Resource busy")
            dev.configuration = config_value
            dev.reset_toggles(device_too=True)

    def _interface(self, dev: SimulatedDevice, intf: int) -> list[InterfaceDescriptor]:
        for config in dev.configs:
            if config.bConfigurationValue == dev.configuration and intf < config.bNumInterfaces:
                return config.interfaces[intf]
        raise _usb_error(-5, errno.ENOENT, "Entity not found")

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        dev = self._device(dev_handle)
        with dev.cond:
            self._interface(dev, intf)
            if intf in dev.claimed and intf not in dev_handle.claimed:
                raise _usb_error(-6, errno.EBUSY, "Resource busy")
            dev.claimed.add(intf)
            dev_handle.claimed.add(intf)

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        dev = self._device(dev_handle)
        with dev.cond:
            if intf not in dev_handle.claimed:
                raise _usb_error(-5, errno.ENOENT, "Entity not found")
            dev_handle.claimed.discard(intf)
            dev.claimed.discard(intf)
            dev.end_interface_transfers(intf)

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        """The firmware STALLs SET_INTERFACE. Linux takes a STALL from an interface with a
        single alternate setting as success and clears the halt of each of its endpoints:
        the host's data toggles are reset, the firmware's are not."""
        dev = self._device(dev_handle)
        if altsetting >= len(self._interface(dev, intf)):
            raise _usb_error(-9, errno.EPIPE, "Pipe error")
        with dev.cond:
            dev.set_interface_requests += 1
            if dev.configuration == 1:
                dev.reset_toggles(intf, device_too=False)

    # transfers ---------------------------------------------------------------------

    def check_claimed(self, dev_handle: _Handle, intf: int) -> SimulatedDevice:
        dev = self._device(dev_handle)
        if intf not in dev_handle.claimed:
            raise _usb_error(-5, errno.ENOENT, f"interface {intf} not claimed")
        return dev

    def in_transfers(self, dev_handle: _Handle) -> SimulatedTransfers:
        """Queued IN transfers, as pyusb's libusb backend gets them from libusb."""
        return SimulatedTransfers(self, dev_handle)

    def bulk_write(
        self, dev_handle: _Handle, ep: int, intf: int, data: array[int], timeout: int
    ) -> int:
        return self.check_claimed(dev_handle, intf).write(ep, data.tobytes())

    def bulk_read(
        self, dev_handle: _Handle, ep: int, intf: int, buff: array[int], timeout: int
    ) -> int:
        return self.check_claimed(dev_handle, intf).read(ep, buff, timeout)

    def intr_read(
        self, dev_handle: _Handle, ep: int, intf: int, buff: array[int], timeout: int
    ) -> int:
        return self.check_claimed(dev_handle, intf).read(ep, buff, timeout)

    def ctrl_transfer(
        self,
        dev_handle: _Handle,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: array[int],
        timeout: int,
    ) -> int:
        dev = self._device(dev_handle)
        get_string = (
            bmRequestType == 0x80
            and bRequest == 0x06  # GET_DESCRIPTOR
            and wValue >> 8 == usb.util.DESC_TYPE_STRING
        )
        if not get_string:
            raise _usb_error(-9, errno.EPIPE, "Pipe error")  # a STALL, like unknown requests
        desc = dev.string_descriptor(wValue & 0xFF)[: len(data)]
        data[: len(desc)] = array("B", desc)
        return len(desc)

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        dev = self._device(dev_handle)
        with dev.cond:
            if ep in dev.endpoints:
                dev.endpoints[ep].host_toggle = 0  # the firmware's stays (not halted)

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return False
