"""Finding, opening and talking to a SIMtrace2 card-emulation interface with pyusb.

Selection follows upstream's options (``-V -P -C -I -S -A -H``, client.md §2) with the
recommended defaults: without ``-V/-P`` every board of the SIMtrace2 family is considered,
without ``-C`` the configuration holding the cardem interface; ``-A`` or ``-H`` alone picks
a device, as upstream. When exactly one card-emulation interface remains it is used;
otherwise :class:`SelectionError` lists the candidates together with the options that
select each of them.

:class:`CardemTransport` moves messages between asyncio and USB. Both IN endpoints are read
with one-packet transfers kept queued (:mod:`.transfers`; four on bulk IN, as upstream),
whose callbacks run on one event thread in completion order; :mod:`.framing` puts the
packets together into messages. One writer thread sends, in order. The event loop never
waits for USB.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import usb.core
import usb.util

from .errors import DeviceError, DeviceGone, ProtocolError, SelectionError, St2Error
from .framing import PACKET_SIZE, MessageAssembler
from .protocol import Message, encode
from .transfers import Completion, InTransfers, TransferStatus, in_transfers

__all__ = [
    "BOARDS",
    "BULK_IN_QUEUE",
    "CARDEM_CLASS",
    "IRQ_IN_QUEUE",
    "VENDOR_ID",
    "Board",
    "Candidate",
    "CardemDevice",
    "CardemTransport",
    "Endpoints",
    "Incoming",
    "Selector",
    "find_candidates",
    "open_cardem",
    "select_candidate",
    "usb_path",
]

log = logging.getLogger("remsim.client.st2")

#: OpenMoko's vendor id, used by every board of the family.
VENDOR_ID = 0x1D50
#: bInterfaceClass / bInterfaceSubClass of a card-emulation interface (0x01 is the sniffer).
CARDEM_CLASS = (0xFF, 0x02)
#: One-packet reads kept queued on bulk IN (upstream keeps four; with one it lost IN data).
BULK_IN_QUEUE = 4
#: ... and on the interrupt endpoint (STATUS), as upstream.
IRQ_IN_QUEUE = 1
_WRITE_TIMEOUT_MS = 100_000  # upstream's OUT timeout
#: Longest single wait of the USB event thread for a transfer to end (a stop interrupts it).
_EVENT_WAIT_S = 1.0
#: How long a close waits for the cancelled reads to end before leaving the device open.
_CANCEL_WAIT_S = 2.0


@dataclass(frozen=True, slots=True)
class Board:
    """A board running the cardem firmware (simtrace2-cardem.md §1)."""

    name: str
    product_id: int
    slots: int
    modem_reset: bool  # the firmware can pulse the modem's PERST line
    card_insert: bool  # the firmware drives a card-presence line towards the modem
    measures_vcc: bool  # STATUS carries voltage_mv


BOARDS: tuple[Board, ...] = (
    Board("SIMtrace 2", 0x60E3, 1, modem_reset=False, card_insert=False, measures_vcc=False),
    Board("sysmoQMOD (Quad Modem)", 0x4004, 2, modem_reset=True, card_insert=False,
          measures_vcc=True),
    Board("OWHW", 0x4001, 2, modem_reset=False, card_insert=True, measures_vcc=False),
    Board("ngff-cardem", 0x616E, 1, modem_reset=True, card_insert=True, measures_vcc=True),
    Board("sysmoOCTSIM-Tester", 0x616D, 1, modem_reset=False, card_insert=True,
          measures_vcc=True),
)  # fmt: skip
_BOARD_BY_PID = {board.product_id: board for board in BOARDS}


@dataclass(frozen=True, slots=True)
class Selector:
    """The device-selection options; ``None`` = not given."""

    vendor: int | None = None  # -V
    product: int | None = None  # -P
    config: int | None = None  # -C
    interface: int | None = None  # -I
    altsetting: int = 0  # -S
    address: int | None = None  # -A (0 = "the only device", as upstream)
    path: str | None = None  # -H


def usb_path(dev: Any) -> str:
    """``<bus>-<port>[.<port>...]``, the notation of Linux sysfs and of ``-H``."""
    ports = getattr(dev, "port_numbers", None)
    if not ports:
        return str(dev.bus)
    return f"{dev.bus}-" + ".".join(map(str, ports))


def _string(dev: Any, index: int) -> str | None:
    """A string descriptor, or None when it cannot be read (e.g. no permission)."""
    if not index:
        return None
    try:
        return usb.util.get_string(dev, index)  # type: ignore[no-any-return]
    # NotImplementedError: a pyusb backend that cannot read string descriptors at all
    except (usb.core.USBError, ValueError, NotImplementedError):
        return None


@dataclass(frozen=True, slots=True)
class Candidate:
    """One card-emulation interface of one device."""

    device: Any = field(repr=False, compare=False)  # usb.core.Device
    bus: int
    address: int
    path: str
    vendor: int
    product: int
    config: int
    interface: int
    i_interface: int = field(repr=False, default=0)

    @property
    def board(self) -> Board | None:
        return _BOARD_BY_PID.get(self.product) if self.vendor == VENDOR_ID else None

    @property
    def options(self) -> str:
        """The upstream-compatible options that select exactly this interface."""
        return (
            f"-V {self.vendor:04x} -P {self.product:04x} -C {self.config} "
            f"-I {self.interface} -H {self.path}"
        )

    def describe(self) -> str:
        """One line for humans; reads string descriptors when permitted."""
        board = self.board
        name = _string(self.device, self.device.iProduct) or (board.name if board else "?")
        line = (
            f"{self.path} (address {self.address}) {self.vendor:04x}:{self.product:04x} "
            f"{name}, config {self.config}, interface {self.interface}"
        )
        if label := _string(self.device, self.i_interface):
            line += f" '{label}'"
        if serial := _string(self.device, self.device.iSerialNumber):
            line += f", serial {serial}"
        return f"{line}  [{self.options}]"


def _compatible(dev: Any, sel: Selector) -> bool:
    if sel.vendor is None and sel.product is None:
        return dev.idVendor == VENDOR_ID and dev.idProduct in _BOARD_BY_PID
    return (sel.vendor is None or dev.idVendor == sel.vendor) and (
        sel.product is None or dev.idProduct == sel.product
    )


def _devices(backend: Any) -> Iterator[Any]:
    try:
        yield from usb.core.find(find_all=True, backend=backend)
    except usb.core.NoBackendError as exc:
        raise DeviceError(f"no libusb backend available: {exc}") from exc


def _located(dev: Any, path: str, sel: Selector) -> bool:
    """Upstream's rule: ``-A`` (non-zero) or ``-H`` picks the device; given both, either one
    matching is enough (on a sysmoQMOD only the path tells modems 1/2 from 3/4)."""
    if not sel.address and not sel.path:
        return True
    return bool(sel.address and dev.address == sel.address) or bool(sel.path and path == sel.path)


def find_candidates(selector: Selector = Selector(), backend: Any = None) -> list[Candidate]:
    """Every card-emulation interface the selection options allow, in bus order."""
    found = []
    for dev in _devices(backend):
        if not _compatible(dev, selector):
            continue
        path = usb_path(dev)
        if not _located(dev, path, selector):
            continue
        for cfg in dev:
            if selector.config is not None and cfg.bConfigurationValue != selector.config:
                continue
            for intf in cfg:
                if intf.bAlternateSetting != 0:
                    continue
                if (intf.bInterfaceClass, intf.bInterfaceSubClass) != CARDEM_CLASS:
                    continue
                if selector.interface is not None and intf.bInterfaceNumber != selector.interface:
                    continue
                found.append(
                    Candidate(
                        dev,
                        dev.bus,
                        dev.address,
                        path,
                        dev.idVendor,
                        dev.idProduct,
                        cfg.bConfigurationValue,
                        intf.bInterfaceNumber,
                        intf.iInterface,
                    )
                )
    found.sort(key=lambda c: (c.bus, c.path, c.address, c.config, c.interface))
    return found


def _listing(candidates: list[Candidate]) -> str:
    return "".join(f"\n  {c.describe()}" for c in candidates)


def select_candidate(selector: Selector = Selector(), backend: Any = None) -> Candidate:
    """The single card-emulation interface matching ``selector``, or SelectionError."""
    matching = find_candidates(selector, backend)
    if len(matching) == 1:
        return matching[0]
    if matching:
        raise SelectionError(
            f"{len(matching)} card-emulation interfaces match; choose one with -H (USB path) "
            f"or -A (address) and -I (interface):{_listing(matching)}",
            matching,
        )
    present = find_candidates(Selector(), backend) if selector != Selector() else []
    if present:
        raise SelectionError(
            f"no card-emulation interface matches the selection options; present:"
            f"{_listing(present)}",
            present,
        )
    raise SelectionError(
        "no card-emulation interface found (is a SIMtrace2-family board plugged in and "
        "running the cardem firmware?)"
    )


@dataclass(frozen=True, slots=True)
class Endpoints:
    out: int  # bulk OUT
    bulk_in: int
    irq_in: int
    bulk_in_packet: int = PACKET_SIZE  # wMaxPacketSize
    irq_in_packet: int = PACKET_SIZE


def _endpoints(intf: Any) -> Endpoints:
    """Like upstream: the bulk endpoint with 0x80 is IN, the other bulk OUT; last one wins."""
    out = bulk_in = irq_in = None
    for ep in intf:
        kind = usb.util.endpoint_type(ep.bmAttributes)
        if kind == usb.util.ENDPOINT_TYPE_BULK:
            if ep.bEndpointAddress & 0x80:
                bulk_in = ep
            else:
                out = ep
        elif kind == usb.util.ENDPOINT_TYPE_INTR and ep.bEndpointAddress & 0x80:
            irq_in = ep
    if out is None or bulk_in is None or irq_in is None:
        raise DeviceError(
            f"interface {intf.bInterfaceNumber} doesn't have at least one IN, OUT and IRQ_IN "
            "endpoint"
        )
    return Endpoints(
        out.bEndpointAddress,
        bulk_in.bEndpointAddress,
        irq_in.bEndpointAddress,
        bulk_in.wMaxPacketSize,
        irq_in.wMaxPacketSize,
    )


def _usb_error(exc: usb.core.USBError, what: str) -> DeviceError:
    if exc.errno == errno.ENODEV or exc.backend_error_code == -4:  # LIBUSB_ERROR_NO_DEVICE
        return DeviceGone(f"USB device disappeared ({what})")
    return DeviceError(f"USB {what} failed: {exc}")


class CardemDevice:
    """An opened card-emulation interface. Blocking calls: use it from threads."""

    def __init__(self, candidate: Candidate, endpoints: Endpoints) -> None:
        self.candidate = candidate
        self.endpoints = endpoints
        self._dev = candidate.device

    @property
    def path(self) -> str:
        return self.candidate.path

    @property
    def interface(self) -> int:
        return self.candidate.interface

    @classmethod
    def open(cls, candidate: Candidate, altsetting: int = 0) -> CardemDevice:
        """Set the configuration if needed, claim the interface, set the alternate setting.

        The firmware STALLs SET_INTERFACE (it has no alternate settings); Linux takes that
        as success and clears the halt of each endpoint, which resets the host's data
        toggles but not the firmware's. The first packet on each endpoint may then be lost,
        which is why the front-end starts with CONFIG (twice; see :mod:`.frontend`).
        """
        dev = candidate.device
        try:
            try:
                current = dev.get_active_configuration().bConfigurationValue
            except usb.core.USBError:
                current = None
            if current != candidate.config:
                dev.set_configuration(candidate.config)
            usb.util.claim_interface(dev, candidate.interface)
            dev.set_interface_altsetting(candidate.interface, altsetting)
            intf = usb.util.find_descriptor(
                dev.get_active_configuration(),
                bInterfaceNumber=candidate.interface,
                bAlternateSetting=altsetting,
            )
            endpoints = _endpoints(intf)
        except (usb.core.USBError, ValueError, DeviceError) as exc:
            usb.util.dispose_resources(dev)
            raise DeviceError(f"can't open USB device {candidate.path}: {exc}") from exc
        return cls(candidate, endpoints)

    def write(self, data: bytes, timeout_ms: int = _WRITE_TIMEOUT_MS) -> None:
        try:
            written = self._dev.write(self.endpoints.out, data, timeout_ms)
        except usb.core.USBError as exc:
            raise _usb_error(exc, "bulk OUT") from exc
        if written != len(data):
            raise DeviceError(f"bulk OUT wrote {written} of {len(data)} bytes")

    def in_transfers(self) -> InTransfers:
        """Asynchronous IN transfers on this device (see :mod:`.transfers`)."""
        return in_transfers(self._dev)

    def close(self) -> None:
        """Release the interface and close the device (no transfer may be pending)."""
        with contextlib.suppress(usb.core.USBError):  # gone already
            usb.util.release_interface(self._dev, self.candidate.interface)
        usb.util.dispose_resources(self._dev)


def open_cardem(selector: Selector = Selector(), backend: Any = None) -> CardemDevice:
    """Select (see :func:`select_candidate`) and open a card-emulation interface."""
    return CardemDevice.open(select_candidate(selector, backend), selector.altsetting)


EndpointKind = Literal["bulk", "irq"]


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message from the device and the endpoint it came on."""

    endpoint: EndpointKind
    message: Message


class _InPipe:
    """One IN endpoint: ``depth`` one-packet reads always queued, the packets put together
    into messages in the order they arrived.

    Each read is one packet long, so that every packet completes one: the firmware ends a
    message of 128, 192 or 256 bytes on a full packet without a zero-length one, and a
    longer read would wait for the next message (or for ever).
    """

    def __init__(
        self,
        transfers: InTransfers,
        name: EndpointKind,
        endpoint: int,
        packet_size: int,
        depth: int,
        deliver: Callable[[Incoming | St2Error], None],
    ) -> None:
        self.transfers = transfers
        self.name = name
        self.endpoint = endpoint
        self.packet_size = packet_size
        self.depth = depth
        self.assembler = MessageAssembler(packet_size)
        self._deliver = deliver
        self._lock = threading.Lock()  # no read is queued once stop() has returned
        self._stopped = False

    def start(self) -> None:
        for _ in range(self.depth):
            self._submit()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True

    def _submit(self) -> None:
        self.transfers.submit(
            self.endpoint, self.packet_size, self._completed, interrupt=self.name == "irq"
        )

    def _completed(self, done: Completion) -> None:
        """On the event thread, in the order the packets arrived."""
        with self._lock:
            if self._stopped:
                return
            what = f"{self.name} IN {self.endpoint:#04x}"
            if done.status is not TransferStatus.COMPLETED:
                self._stopped = True
                if done.status is TransferStatus.NO_DEVICE:
                    self._deliver(DeviceGone(f"USB device disappeared ({what})"))
                else:
                    self._deliver(DeviceError(f"USB {what} failed: {done.status.name}"))
                return
            try:
                self._submit()  # the queue is full again before anything else happens
            except usb.core.USBError as exc:
                self._stopped = True
                self._deliver(_usb_error(exc, what))
                return
        for item in self.assembler.feed(done.data):
            if isinstance(item, ProtocolError):
                log.error("bad message on %s IN: %s", self.name, item)
            else:
                self._deliver(Incoming(self.name, item))


class CardemTransport:
    """asyncio access to a :class:`CardemDevice`; USB waits happen on threads."""

    def __init__(self, device: CardemDevice) -> None:
        self.device = device
        self._queue: asyncio.Queue[Incoming | St2Error | None] = asyncio.Queue()
        self._writer = concurrent.futures.ThreadPoolExecutor(1, "st2-out")
        self._stop = threading.Event()
        self._transfers: InTransfers | None = None
        self._pipes: list[_InPipe] = []
        self._events: threading.Thread | None = None
        self._failure: St2Error | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_write: asyncio.Future[None] | None = None

    def start(self) -> None:
        """Queue the reads and start the event thread; call from the event loop that will
        consume :meth:`receive`. Raises DeviceError if the reads cannot be queued."""
        self._loop = asyncio.get_running_loop()
        eps = self.device.endpoints
        self._transfers = transfers = self.device.in_transfers()
        self._pipes = [
            _InPipe(transfers, "bulk", eps.bulk_in, eps.bulk_in_packet, BULK_IN_QUEUE,
                    self._deliver),
            _InPipe(transfers, "irq", eps.irq_in, eps.irq_in_packet, IRQ_IN_QUEUE, self._deliver),
        ]  # fmt: skip
        self._events = threading.Thread(
            target=self._handle_events,
            name=f"st2-usb-{self.device.path}:{self.device.interface}",
            daemon=True,  # never keeps the process alive if libusb does not let go
        )
        self._events.start()
        try:
            for pipe in self._pipes:
                pipe.start()
        except usb.core.USBError as exc:  # aclose() cancels those already queued
            raise _usb_error(exc, "queueing IN transfers") from exc

    def _handle_events(self) -> None:
        transfers = self._transfers
        assert transfers is not None
        while not (self._stop.is_set() and transfers.outstanding == 0):
            try:
                transfers.handle_events(_EVENT_WAIT_S)
            except usb.core.USBError as exc:
                if not self._stop.is_set():
                    self._deliver(_usb_error(exc, "event handling"))
                return

    def _deliver(self, item: Incoming | St2Error) -> None:
        assert self._loop is not None
        if self._stop.is_set():
            return
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self._stop.set()

    async def receive(self) -> Incoming | None:
        """The next message from the device, None once closed; DeviceError if it failed."""
        if self._failure is not None:
            raise self._failure
        if self._stop.is_set() and self._queue.empty():
            return None
        item = await self._queue.get()
        if isinstance(item, St2Error):
            self._failure = item
            raise item
        return item

    def submit(self, *messages: Message) -> asyncio.Future[None]:
        """Queue messages for the device, one bulk OUT transfer each, in call order.

        Returns at once, with a future of the writes; a failed write also ends
        :meth:`receive` with the error, so nobody has to await the future.
        """
        loop = asyncio.get_running_loop()
        if self._stop.is_set():
            log.debug("closed: not sending %r", messages)
            done = loop.create_future()
            done.set_result(None)
            return done
        transfers = [encode(message) for message in messages]
        future = loop.run_in_executor(self._writer, self._write, transfers)
        future.add_done_callback(self._written)
        self._last_write = future
        return future

    def _write(self, transfers: list[bytes]) -> None:
        for data in transfers:
            self.device.write(data)

    def _written(self, future: asyncio.Future[None]) -> None:
        exc = None if future.cancelled() else future.exception()
        if exc is None:
            return
        if not isinstance(exc, St2Error):
            exc = DeviceError(f"bulk OUT failed: {exc!r}")
        log.error("%s", exc)
        if not self._stop.is_set():
            self._queue.put_nowait(exc)

    async def send(self, *messages: Message) -> None:
        """Write messages and wait until the device took them."""
        await self.submit(*messages)

    async def drain(self) -> None:
        """Wait until everything submitted so far is written (or failed)."""
        if self._last_write is not None:
            await asyncio.wait([self._last_write])

    async def aclose(self) -> None:
        """Write what the hooks queued, cancel the reads, release the interface."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._queue.put_nowait(None)  # wakes a pending receive()
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._writer.shutdown(wait=True)  # the hooks' last messages still reach the device
        for pipe in self._pipes:
            pipe.stop()
        if self._transfers is not None:
            self._transfers.cancel_all()
            self._transfers.interrupt()  # the event thread sees the stop even with none pending
        if self._events is not None:
            self._events.join(_CANCEL_WAIT_S)
            if self._events.is_alive():
                # Closing a handle under a pending transfer is unsafe; leave it to process exit.
                log.warning("USB reads did not end; leaving %s open", self.device.path)
                return
        self.device.close()
