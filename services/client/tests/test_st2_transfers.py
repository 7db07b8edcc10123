"""Queued IN transfers on real libusb (``LibusbTransfers``), as far as a machine without a
board allows: the transfer struct as libusb lays it out, event handling and its interrupt
on pyusb's own libusb context. Submitting needs a device; the firmware simulator covers
that side of the contract (test_st2_firmware.py, test_st2_session.py)."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator

import pytest
import usb.backend.libusb1

from remsim_client.st2.transfers import LibusbTransfers, TransferStatus, _Transfer


@pytest.fixture
def libusb() -> Iterator[LibusbTransfers]:
    backend = usb.backend.libusb1.get_backend()
    if backend is None:
        pytest.skip("libusb 1.0 is not available")
    yield LibusbTransfers(backend.lib, backend.ctx, ctypes.c_void_p())


def test_the_transfer_struct_matches_pyusbs_declaration() -> None:
    """Two independent declarations of struct libusb_transfer agree, field by field."""
    theirs = usb.backend.libusb1._libusb_transfer
    for name, _type in _Transfer._fields_:
        assert getattr(_Transfer, name).offset == getattr(theirs, name).offset, name
    assert ctypes.sizeof(_Transfer) <= ctypes.sizeof(theirs)  # without iso_packet_desc[]


def test_the_status_values_are_libusbs() -> None:
    assert [s.value for s in TransferStatus] == list(range(7))
    assert TransferStatus.NO_DEVICE == 5 and TransferStatus.CANCELLED == 3


def test_event_handling_waits_and_nothing_is_outstanding(libusb: LibusbTransfers) -> None:
    assert libusb.outstanding == 0
    libusb.cancel_all()
    libusb.handle_events(0.01)


def test_interrupt_ends_a_waiting_event_handler(libusb: LibusbTransfers) -> None:
    handler = threading.Thread(target=libusb.handle_events, args=(60.0,))
    handler.start()
    libusb.interrupt()
    handler.join(10)
    assert not handler.is_alive()
