"""Queued IN transfers under pyusb: libusb's asynchronous model (submit, complete, cancel).

pyusb offers blocking transfers only, and a thread blocked in a read holds exactly one
transfer. The host must keep several reads queued on bulk IN (as upstream does, which once
lost IN data with a single one) and must keep their order: the firmware's ``seq_nr`` is
always 0, so reads completed by different threads could not be put back in order.

:class:`InTransfers` is what the st2 transport needs from a pyusb backend: submit an IN
transfer with a completion callback, cancel all, and handle events, which runs the
callbacks of completed transfers in completion order on the calling thread. On one
endpoint transfers complete in the order they were submitted.

:func:`in_transfers` finds it for an opened pyusb device: a backend may provide it itself
(``backend.in_transfers(dev_handle)``, as the firmware simulator of the tests does);
for pyusb's own libusb 1.0 backend, :class:`LibusbTransfers` implements it with libusb's
asynchronous API (``libusb_submit_transfer`` & co.) on the backend's library, context and
device handle, so pyusb and the queued reads share one libusb device handle.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import usb.core

from .errors import DeviceError

__all__ = [
    "Callback",
    "Completion",
    "InTransfers",
    "LibusbTransfers",
    "TransferStatus",
    "in_transfers",
]

log = logging.getLogger("remsim.client.st2")


class TransferStatus(IntEnum):
    """How a transfer ended (``enum libusb_transfer_status``)."""

    COMPLETED = 0
    ERROR = 1
    TIMED_OUT = 2
    CANCELLED = 3
    STALL = 4
    NO_DEVICE = 5
    OVERFLOW = 6


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished IN transfer: its endpoint, how it ended, and the bytes it received."""

    endpoint: int
    status: TransferStatus
    data: bytes


Callback = Callable[[Completion], None]


class InTransfers(Protocol):
    """Asynchronous IN transfers on one opened device."""

    @property
    def outstanding(self) -> int:
        """Transfers submitted whose callback has not run yet."""

    def submit(
        self, endpoint: int, length: int, callback: Callback, *, interrupt: bool = False
    ) -> None:
        """Queue an IN transfer of up to ``length`` bytes, without a timeout; ``callback``
        runs once it has ended. Raises usb.core.USBError if it cannot be queued."""

    def cancel_all(self) -> None:
        """Ask every outstanding transfer to end; each callback then runs (CANCELLED)."""

    def handle_events(self, timeout: float) -> None:
        """Run the callbacks of the transfers that ended, waiting up to ``timeout`` seconds
        for one. Callbacks only ever run inside this call."""

    def interrupt(self) -> None:
        """Make a :meth:`handle_events` call in progress return now."""


def in_transfers(device: usb.core.Device) -> InTransfers:
    """The asynchronous IN transfers of an opened (claimed) pyusb device."""
    backend = device.backend
    # pyusb keeps the device handle in its resource manager; this opens it if needed.
    handle = device._ctx.managed_open()
    own = getattr(backend, "in_transfers", None)
    if own is not None:
        return own(handle)  # type: ignore[no-any-return]
    if type(backend).__module__ == "usb.backend.libusb1":
        return LibusbTransfers(backend.lib, backend.ctx, handle.handle)
    raise DeviceError(
        f"the pyusb backend {type(backend).__module__} cannot queue transfers; "
        "the st2 client needs libusb 1.0"
    )


# --- libusb's asynchronous API ----------------------------------------------------------

_TYPE_BULK = 2  # LIBUSB_TRANSFER_TYPE_BULK
_TYPE_INTERRUPT = 3
_ERROR_NOT_FOUND = -5
_ERROR_INTERRUPTED = -10
_ERRNO = {-1: errno.EIO, -2: errno.EINVAL, -3: errno.EACCES, -4: errno.ENODEV,
          -5: errno.ENOENT, -6: errno.EBUSY, -7: errno.ETIMEDOUT, -8: errno.EOVERFLOW,
          -9: errno.EPIPE, -10: errno.EINTR, -11: errno.ENOMEM, -12: errno.ENOSYS}  # fmt: skip


class _Transfer(ctypes.Structure):
    pass  # struct libusb_transfer; the fields follow once the callback type exists


_TransferP = ctypes.POINTER(_Transfer)
_CALLBACK = ctypes.CFUNCTYPE(None, _TransferP)
_Transfer._fields_ = [
    ("dev_handle", ctypes.c_void_p),
    ("flags", ctypes.c_uint8),
    ("endpoint", ctypes.c_ubyte),
    ("type", ctypes.c_ubyte),
    ("timeout", ctypes.c_uint),
    ("status", ctypes.c_int),
    ("length", ctypes.c_int),
    ("actual_length", ctypes.c_int),
    ("callback", _CALLBACK),
    ("user_data", ctypes.c_void_p),
    ("buffer", ctypes.c_void_p),
    ("num_iso_packets", ctypes.c_int),
    # iso_packet_desc[0] follows: never used for bulk and interrupt transfers
]


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


def _libusb_error(code: int, what: str) -> usb.core.USBError:
    return usb.core.USBError(f"libusb error {code} ({what})", code, _ERRNO.get(code))


@dataclass
class _Pending:
    transfer: Any  # _TransferP
    buffer: ctypes.Array[ctypes.c_ubyte]
    endpoint: int
    callback: Callback


class LibusbTransfers:
    """:class:`InTransfers` with libusb's asynchronous API, on pyusb's libusb handle."""

    def __init__(self, lib: ctypes.CDLL, ctx: ctypes.c_void_p, handle: ctypes.c_void_p) -> None:
        def function(name: str, restype: Any, *argtypes: Any) -> Any:
            # Our own prototypes for the backend's library: pyusb's stay untouched.
            return ctypes.CFUNCTYPE(restype, *argtypes)((name, lib))

        self._alloc = function("libusb_alloc_transfer", _TransferP, ctypes.c_int)
        self._free = function("libusb_free_transfer", None, _TransferP)
        self._submit = function("libusb_submit_transfer", ctypes.c_int, _TransferP)
        self._cancel = function("libusb_cancel_transfer", ctypes.c_int, _TransferP)
        self._interrupt = function("libusb_interrupt_event_handler", None, ctypes.c_void_p)
        self._handle_events = function(
            "libusb_handle_events_timeout_completed",
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.POINTER(_Timeval),
            ctypes.POINTER(ctypes.c_int),
        )
        self._ctx = ctx
        self._handle = handle.value  # libusb_device_handle *
        self._callback = _CALLBACK(self._completed)  # one thunk, alive as long as we are
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)  # user_data: never 0 (NULL)

    @property
    def outstanding(self) -> int:
        with self._lock:
            return len(self._pending)

    def submit(
        self, endpoint: int, length: int, callback: Callback, *, interrupt: bool = False
    ) -> None:
        transfer = self._alloc(0)
        if not transfer:
            raise _libusb_error(-11, "libusb_alloc_transfer")
        buffer = (ctypes.c_ubyte * length)()
        t = transfer.contents
        t.dev_handle = self._handle
        t.endpoint = endpoint
        t.type = _TYPE_INTERRUPT if interrupt else _TYPE_BULK
        t.timeout = 0  # none: a cut-short transfer could lose what it was receiving
        t.length = length
        t.buffer = ctypes.cast(buffer, ctypes.c_void_p)
        t.callback = self._callback
        key = next(self._ids)
        t.user_data = key
        with self._lock:  # registered first: the callback may run before submit returns
            self._pending[key] = _Pending(transfer, buffer, endpoint, callback)
        rc = self._submit(transfer)
        if rc < 0:
            with self._lock:
                del self._pending[key]
            self._free(transfer)
            raise _libusb_error(rc, f"submitting a transfer on {endpoint:#04x}")

    def cancel_all(self) -> None:
        # Under the lock: a transfer is freed only after its callback took it out of
        # _pending, so none of these is freed while we cancel it.
        with self._lock:
            for pending in self._pending.values():
                rc = self._cancel(pending.transfer)
                if rc < 0 and rc != _ERROR_NOT_FOUND:  # NOT_FOUND: it is ending anyway
                    log.warning("cannot cancel a transfer on %#04x: libusb error %d",
                                pending.endpoint, rc)  # fmt: skip

    def handle_events(self, timeout: float) -> None:
        tv = _Timeval(int(timeout), int(timeout % 1 * 1_000_000))
        rc = self._handle_events(self._ctx, ctypes.byref(tv), None)
        if rc < 0 and rc != _ERROR_INTERRUPTED:
            raise _libusb_error(rc, "handling events")

    def interrupt(self) -> None:
        self._interrupt(self._ctx)

    def _completed(self, transfer: Any) -> None:
        try:
            t = transfer.contents
            with self._lock:
                pending = self._pending.pop(t.user_data)
            data = ctypes.string_at(pending.buffer, t.actual_length)
            status = TransferStatus(t.status)
            self._free(transfer)
            pending.callback(Completion(pending.endpoint, status, data))
        except Exception:  # nothing may escape into libusb
            log.exception("USB transfer callback failed")
