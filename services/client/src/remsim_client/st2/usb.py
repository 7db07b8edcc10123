"""Finding, opening and talking to a SIMtrace2 card-emulation interface with pyusb.

Selection follows upstream's options (``-V -P -C -I -S -A -H``, client.md §2) with the
recommended defaults: without ``-V/-P`` every board of the SIMtrace2 family is considered,
without ``-C`` the configuration holding the cardem interface, and when exactly one
card-emulation interface remains it is used; otherwise :class:`SelectionError` lists the
candidates together with the options that select each of them.

:class:`CardemTransport` moves messages between asyncio and the blocking pyusb calls: one
thread per IN endpoint reads without a timeout (a timed-out libusb transfer may have taken
data with it: a long bulk message cut short, a STATUS lost on the interrupt endpoint) and one
writer thread sends, in order. The event loop never waits for USB.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import usb.core
import usb.util

from .errors import DeviceError, DeviceGone, ProtocolError, SelectionError, St2Error
from .protocol import Message, StatusRequest, encode, iter_messages

__all__ = [
    "BOARDS",
    "CARDEM_CLASS",
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

log = logging.getLogger("DST2")

#: OpenMoko's vendor id, used by every board of the family.
VENDOR_ID = 0x1D50
#: bInterfaceClass / bInterfaceSubClass of a card-emulation interface (0x01 is the sniffer).
CARDEM_CLASS = (0xFF, 0x02)
_BULK_IN_SIZE = 4096
_IRQ_IN_SIZE = 64
_WRITE_TIMEOUT_MS = 100_000  # upstream's OUT timeout


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


def find_candidates(selector: Selector = Selector(), backend: Any = None) -> list[Candidate]:
    """Every card-emulation interface the selection options allow, in bus order."""
    found = []
    for dev in _devices(backend):
        if not _compatible(dev, selector):
            continue
        path = usb_path(dev)
        if selector.path and path != selector.path:
            continue
        if selector.address and dev.address != selector.address:
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


def _endpoints(intf: Any) -> Endpoints:
    """Like upstream: the bulk endpoint with 0x80 is IN, the other bulk OUT; last one wins."""
    out = bulk_in = irq_in = None
    for ep in intf:
        kind = usb.util.endpoint_type(ep.bmAttributes)
        if kind == usb.util.ENDPOINT_TYPE_BULK:
            if ep.bEndpointAddress & 0x80:
                bulk_in = ep.bEndpointAddress
            else:
                out = ep.bEndpointAddress
        elif kind == usb.util.ENDPOINT_TYPE_INTR and ep.bEndpointAddress & 0x80:
            irq_in = ep.bEndpointAddress
    if out is None or bulk_in is None or irq_in is None:
        raise DeviceError(
            f"interface {intf.bInterfaceNumber} doesn't have at least one IN, OUT and IRQ_IN "
            "endpoint"
        )
    return Endpoints(out, bulk_in, irq_in)


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
        """Set the configuration if needed, claim the interface, set the alternate setting."""
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

    def read(self, endpoint: int, size: int, timeout_ms: int) -> bytes | None:
        """One IN transfer; None on timeout (``timeout_ms`` 0 waits forever)."""
        try:
            return bytes(self._dev.read(endpoint, size, timeout_ms))
        except usb.core.USBTimeoutError:
            return None
        except usb.core.USBError as exc:
            raise _usb_error(exc, f"IN {endpoint:#04x}") from exc

    def release(self) -> None:
        """Release the interface. The kernel completes the transfers still pending on it,
        which wakes a reader that waits without a timeout."""
        with contextlib.suppress(usb.core.USBError):  # gone already
            usb.util.release_interface(self._dev, self.candidate.interface)

    def close(self) -> None:
        self.release()
        usb.util.dispose_resources(self._dev)


def open_cardem(selector: Selector = Selector(), backend: Any = None) -> CardemDevice:
    """Select (see :func:`select_candidate`) and open a card-emulation interface."""
    return CardemDevice.open(select_candidate(selector, backend), selector.altsetting)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message from the device and the endpoint it came on."""

    endpoint: Literal["bulk", "irq"]
    message: Message


class CardemTransport:
    """asyncio access to a :class:`CardemDevice`; USB waits happen on threads."""

    def __init__(self, device: CardemDevice) -> None:
        self.device = device
        self._queue: asyncio.Queue[Incoming | St2Error | None] = asyncio.Queue()
        self._writer = concurrent.futures.ThreadPoolExecutor(1, "st2-out")
        self._stop = threading.Event()
        self._readers: dict[str, threading.Thread] = {}
        self._failure: St2Error | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_write: asyncio.Future[None] | None = None

    def start(self) -> None:
        """Start reading; call from the event loop that will consume :meth:`receive`."""
        self._loop = asyncio.get_running_loop()
        eps = self.device.endpoints
        readers = (("bulk", eps.bulk_in, _BULK_IN_SIZE), ("irq", eps.irq_in, _IRQ_IN_SIZE))
        for name, ep, size in readers:
            thread = threading.Thread(
                target=self._read_loop,
                args=(name, ep, size),
                name=f"st2-{name}-{self.device.path}:{self.device.interface}",
                daemon=True,  # never keeps the process alive if a read cannot be woken
            )
            thread.start()
            self._readers[name] = thread

    def _read_loop(self, name: Literal["bulk", "irq"], ep: int, size: int) -> None:
        while not self._stop.is_set():
            try:
                buf = self.device.read(ep, size, 0)
            except St2Error as exc:
                if not self._stop.is_set():
                    self._deliver(exc)
                return
            if buf is None or self._stop.is_set():
                continue
            try:
                for message in iter_messages(buf):
                    self._deliver(Incoming(name, message))
            except ProtocolError as exc:
                log.error("bad message on %s IN (%s): %s", name, exc, buf.hex())

    def _deliver(self, item: Incoming | St2Error) -> None:
        assert self._loop is not None
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
        """Stop the reader threads and release the interface."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._queue.put_nowait(None)  # wakes a pending receive()
        bulk = self._readers.get("bulk")
        if bulk is not None and bulk.is_alive():
            # The bulk reader waits without a timeout: a STATUS request makes the firmware
            # answer on bulk IN, which wakes it (it sees the stop flag set before). Queued
            # behind the hooks' messages, so those still reach the device.
            wake = [encode(StatusRequest())]
            with contextlib.suppress(St2Error):
                await asyncio.get_running_loop().run_in_executor(self._writer, self._write, wake)
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        self._writer.shutdown(wait=True)
        bulk = self._readers.get("bulk")
        if bulk is not None:
            bulk.join(timeout=1.0)
        irq = self._readers.get("irq")
        # The interrupt reader has no firmware answer to wake it: releasing the interface
        # completes its transfer. Again, in case a read started just as we stopped (pyusb
        # claims the interface anew for every transfer).
        for _ in range(3):
            self.device.release()
            if irq is None:
                break
            irq.join(timeout=0.5)
            if not irq.is_alive():
                break
        if any(t.is_alive() for t in self._readers.values()):
            # Closing a handle under a pending transfer is unsafe; leave it to process exit.
            log.warning("USB reader did not stop; leaving %s open", self.device.path)
            return
        self.device.close()
