"""Descriptors, device selection and opening, through pyusb with the simulator backend."""

import io
import os
from pathlib import Path

import pytest
import usb.core
import usb.util

from remsim_client.st2.cli import LISTER, St2Options, St2Settings, build_parser, main
from remsim_client.st2.errors import DeviceError, SelectionError
from remsim_client.st2.transfers import Completion, TransferStatus
from remsim_client.st2.usb import (
    CardemDevice,
    Endpoints,
    Selector,
    find_candidates,
    open_cardem,
    select_candidate,
    usb_path,
)
from remsim_testing.st2_firmware import SimulatedBackend, SimulatedDevice


def simtrace(address: int = 5, ports: tuple[int, ...] = (1, 1)) -> SimulatedDevice:
    return SimulatedDevice("SIMtrace 2", bus=2, address=address, ports=ports)


def test_pyusb_sees_the_real_simtrace2_descriptors() -> None:
    backend = SimulatedBackend([simtrace()])
    dev = usb.core.find(idVendor=0x1D50, idProduct=0x60E3, backend=backend)
    assert dev is not None
    assert (dev.bcdUSB, dev.bDeviceClass, dev.bMaxPacketSize0) == (0x0200, 0, 64)
    assert dev.speed == usb.util.SPEED_FULL
    assert dev.manufacturer == "sysmocom - s.f.m.c. GmbH"
    assert dev.product == "SIMtrace 2"
    assert len(dev.serial_number) == 32
    assert usb_path(dev) == "2-1.1"
    cardem, version = dev.configurations()
    assert (cardem.bConfigurationValue, version.bConfigurationValue) == (1, 2)
    assert usb.util.get_string(dev, cardem.iConfiguration) == "SIMtrace Card Emulation"
    intf, dfu = cardem.interfaces()
    assert (intf.bInterfaceClass, intf.bInterfaceSubClass, intf.bInterfaceProtocol) == (
        0xFF,
        0x02,
        0x00,
    )
    assert usb.util.get_string(dev, intf.iInterface) == "CardEmulator Modem 1"
    assert [(ep.bEndpointAddress, usb.util.endpoint_type(ep.bmAttributes)) for ep in intf] == [
        (0x04, usb.util.ENDPOINT_TYPE_BULK),
        (0x85, usb.util.ENDPOINT_TYPE_BULK),
        (0x86, usb.util.ENDPOINT_TYPE_INTR),
    ]
    assert all(ep.wMaxPacketSize == 64 for ep in intf)
    assert intf[2].bInterval == 1
    assert (dfu.bInterfaceClass, dfu.bInterfaceSubClass, dfu.bNumEndpoints) == (0xFE, 0x01, 0)
    (info,) = version.interfaces()
    assert (info.bInterfaceClass, info.bInterfaceSubClass, info.bNumEndpoints) == (0xFF, 0xFF, 0)
    usb.util.dispose_resources(dev)


def test_qmod_has_two_cardem_interfaces_with_their_endpoints() -> None:
    backend = SimulatedBackend([SimulatedDevice("sysmoQMOD (Quad Modem)")])
    dev = usb.core.find(idProduct=0x4004, backend=backend)
    cardem = dev.configurations()[0]
    slot0, slot1, _dfu = cardem.interfaces()
    assert [ep.bEndpointAddress for ep in slot0] == [0x04, 0x85, 0x86]
    assert [ep.bEndpointAddress for ep in slot1] == [0x01, 0x82, 0x83]
    assert usb.util.get_string(dev, slot1.iInterface) == "CardEmulator Modem 2"


@pytest.mark.parametrize(
    ("board", "product_id", "slots"),
    [
        ("SIMtrace 2", 0x60E3, 1),
        ("sysmoQMOD (Quad Modem)", 0x4004, 2),
        ("OWHW", 0x4001, 2),
        ("ngff-cardem", 0x616E, 1),
        ("sysmoOCTSIM-Tester", 0x616D, 1),
    ],
)
def test_every_board_of_the_family_is_found(board: str, product_id: int, slots: int) -> None:
    found = find_candidates(backend=SimulatedBackend([SimulatedDevice(board)]))
    assert [(c.vendor, c.product, c.config, c.interface) for c in found] == [
        (0x1D50, product_id, 1, i) for i in range(slots)
    ]


def test_exactly_one_interface_is_selected_automatically() -> None:
    candidate = select_candidate(backend=SimulatedBackend([simtrace()]))
    assert (candidate.path, candidate.address, candidate.config, candidate.interface) == (
        "2-1.1",
        5,
        1,
        0,
    )
    assert candidate.options == "-V 1d50 -P 60e3 -C 1 -I 0 -H 2-1.1"


def test_two_devices_give_a_clear_error_listing_both() -> None:
    backend = SimulatedBackend([simtrace(5, (1, 1)), simtrace(9, (1, 4))])
    with pytest.raises(SelectionError) as error:
        select_candidate(backend=backend)
    message = str(error.value)
    assert "2 card-emulation interfaces match" in message
    assert "-H" in message and "-I" in message
    assert "2-1.1 (address 5) 1d50:60e3 SIMtrace 2" in message
    assert "[-V 1d50 -P 60e3 -C 1 -I 0 -H 2-1.4]" in message
    assert [c.path for c in error.value.candidates] == ["2-1.1", "2-1.4"]


def test_path_or_address_picks_one_of_several_devices() -> None:
    backend = SimulatedBackend([simtrace(5, (1, 1)), simtrace(9, (1, 4))])
    assert select_candidate(Selector(path="2-1.4"), backend).address == 9
    assert select_candidate(Selector(address=5), backend).path == "2-1.1"
    # -A 0 is upstream's "the only device": no filter at all
    with pytest.raises(SelectionError, match="2 card-emulation interfaces"):
        select_candidate(Selector(address=0), backend)


def test_given_both_path_and_address_either_one_matching_selects_as_upstream() -> None:
    backend = SimulatedBackend([simtrace(5, (1, 1)), simtrace(9, (1, 4))])
    # a stale -A next to the right -H (the address changes when the device re-enumerates)
    assert select_candidate(Selector(address=7, path="2-1.4"), backend).address == 9
    assert select_candidate(Selector(address=9, path="2-9"), backend).path == "2-1.4"
    assert select_candidate(Selector(address=9, path="2-1.4"), backend).address == 9
    # naming two different devices is ambiguous (upstream would open the last one)
    with pytest.raises(SelectionError, match="2 card-emulation interfaces"):
        select_candidate(Selector(address=5, path="2-1.4"), backend)


def test_a_two_slot_board_needs_the_interface_option() -> None:
    backend = SimulatedBackend([SimulatedDevice("sysmoQMOD (Quad Modem)", bus=2, ports=(1, 1))])
    with pytest.raises(SelectionError) as error:
        select_candidate(backend=backend)
    assert "'CardEmulator Modem 2'" in str(error.value)
    assert select_candidate(Selector(interface=1), backend).interface == 1


def test_upstream_style_full_options_select_exactly() -> None:
    qmods = [
        SimulatedDevice("sysmoQMOD (Quad Modem)", bus=2, address=3, ports=(1, 1)),
        SimulatedDevice("sysmoQMOD (Quad Modem)", bus=2, address=4, ports=(1, 4)),
    ]
    backend = SimulatedBackend(qmods)
    selector = Selector(vendor=0x1D50, product=0x4004, config=1, interface=1, path="2-1.4")
    candidate = select_candidate(selector, backend)
    assert (candidate.address, candidate.interface) == (4, 1)


def test_no_match_lists_what_is_present() -> None:
    backend = SimulatedBackend([simtrace()])
    with pytest.raises(SelectionError) as error:
        select_candidate(Selector(interface=1), backend)
    assert "no card-emulation interface matches" in str(error.value)
    assert "2-1.1" in str(error.value)
    # configuration 2 (firmware version) has no card-emulation interface
    with pytest.raises(SelectionError, match="present"):
        select_candidate(Selector(config=2), backend)


def test_nothing_plugged_in() -> None:
    with pytest.raises(SelectionError, match="no card-emulation interface found"):
        select_candidate(backend=SimulatedBackend())


def test_foreign_devices_need_explicit_ids() -> None:
    other = SimulatedDevice("SIMtrace 2")
    other.descriptor.idVendor, other.descriptor.idProduct = 0x1234, 0x5678
    backend = SimulatedBackend([other])
    assert find_candidates(backend=backend) == []
    (candidate,) = find_candidates(Selector(vendor=0x1234, product=0x5678), backend)
    assert candidate.board is None
    assert "1234:5678 SIMtrace 2" in candidate.describe()


def test_open_claims_the_interface_and_finds_the_endpoints() -> None:
    qmod = SimulatedDevice("sysmoQMOD (Quad Modem)")
    backend = SimulatedBackend([qmod])
    device = open_cardem(Selector(interface=1), backend)
    assert device.endpoints == Endpoints(out=0x01, bulk_in=0x82, irq_in=0x83)
    assert qmod.claimed == {1}
    device.close()
    assert qmod.claimed == set()


def test_open_switches_to_the_cardem_configuration() -> None:
    sim = simtrace()
    sim.configuration = 2
    device = open_cardem(backend=SimulatedBackend([sim]))
    assert sim.configuration == 1
    assert device.endpoints == Endpoints(out=0x04, bulk_in=0x85, irq_in=0x86)
    device.close()


def test_an_interface_claimed_elsewhere_cannot_be_opened() -> None:
    backend = SimulatedBackend([simtrace()])
    first = open_cardem(backend=backend)
    with pytest.raises(DeviceError, match=r"can't open USB device 2-1\.1"):
        CardemDevice.open(select_candidate(backend=backend))
    first.close()


def test_the_reads_are_queued_on_the_opened_device() -> None:
    """The st2 transport's one-packet reads: queued on the pyusb device's own handle."""
    sim = simtrace()
    device = open_cardem(backend=SimulatedBackend([sim]))
    assert (device.endpoints.bulk_in_packet, device.endpoints.irq_in_packet) == (64, 64)
    transfers = device.in_transfers()
    done: list[Completion] = []
    transfers.submit(device.endpoints.irq_in, 64, done.append, interrupt=True)
    assert sim.reads_queued(0x86) == 1
    transfers.cancel_all()
    transfers.handle_events(1.0)
    assert [c.status for c in done] == [TransferStatus.CANCELLED]
    device.close()
    assert sim.claimed == set()


def test_a_backend_without_queued_transfers_is_an_error() -> None:
    class Blocking(SimulatedBackend):
        in_transfers = None  # like pyusb's libusb0 and openusb backends

    device = open_cardem(backend=Blocking([simtrace()]))
    with pytest.raises(DeviceError, match="cannot queue transfers"):
        device.in_transfers()
    device.close()


def test_missing_endpoint_is_an_error() -> None:
    sim = simtrace()
    del sim.configs[0].interfaces[0][0].endpoints[2]
    with pytest.raises(DeviceError, match="doesn't have at least one IN, OUT and IRQ_IN"):
        open_cardem(backend=SimulatedBackend([sim]))
    assert sim.claimed == set()


def test_missing_altsetting_is_an_error() -> None:
    with pytest.raises(DeviceError, match="can't open"):
        open_cardem(Selector(altsetting=1), SimulatedBackend([simtrace()]))


def test_usb_path_of_a_device_without_port_numbers() -> None:
    sim = SimulatedDevice("SIMtrace 2", bus=3, ports=())
    dev = usb.core.find(backend=SimulatedBackend([sim]))
    assert usb_path(dev) == "3"


# --- command line -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No REMSIM_* variables from the environment the tests run in."""
    for key in list(os.environ):
        if key.startswith("REMSIM_"):
            monkeypatch.delenv(key)


def st2_options(*argv: str) -> St2Options:
    return LISTER.load(St2Settings, build_parser(), argv).st2_options()


def test_upstream_options_parse_like_upstream() -> None:
    args = ["-V", "1d50", "-P", "0x4004", "-C", "1", "-I", "1", "-S", "0", "-A", "7"]
    options = st2_options(*args, "-H", "2-1.4", "-Z", "1")
    assert options.selector == Selector(0x1D50, 0x4004, 1, 1, 0, 7, "2-1.4")
    assert options.presence_high is True
    assert st2_options("-Z", "0").presence_high is False
    assert st2_options("-Z", "2").presence_high is True  # atoi(...) != 0
    assert st2_options() == st2_options("-S", "0") == St2Options(Selector(), None)


def test_long_options_environment_and_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The command line wins over REMSIM_CLIENT_*, which wins over the config file."""
    config = tmp_path / "client.toml"
    config.write_text(
        'usb_vendor = "0x1d50"\nusb_product = 0x4004\nusb_config = 1\nusb_interface = 1\n'
        'usb_path = "2-1.2"\nset_sim_presence = false\n'
    )
    monkeypatch.setenv("REMSIM_CLIENT_USB_PATH", "2-1.1")
    monkeypatch.setenv("REMSIM_CLIENT_USB_INTERFACE", "1")
    options = st2_options("--config", str(config), "--usb-interface=0", "--set-sim-presence", "1")
    assert options.selector == Selector(0x1D50, 0x4004, 1, interface=0, path="2-1.1")
    assert options.presence_high is True


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["-V", "zz"], "bad value 'zz' for -V/--usb-vendor (REMSIM_CLIENT_USB_VENDOR): not a hex"),
        (["-P", "10000"], "bad value '10000' for -P/--usb-product (REMSIM_CLIENT_USB_PRODUCT)"),
        (["-I", "one"], "bad value 'one' for -I/--usb-interface (REMSIM_CLIENT_USB_INTERFACE)"),
        (["-A", "128"], "bad value '128' for -A/--usb-address (REMSIM_CLIENT_USB_ADDRESS)"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options_are_usage_errors(
    args: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args, backend=SimulatedBackend([simtrace()]))
    assert exit_.value.code == 2
    assert problem in capsys.readouterr().err


def test_list_prints_every_interface() -> None:
    backend = SimulatedBackend([simtrace(5, (1, 1)), SimulatedDevice("OWHW", bus=2, ports=(1, 2))])
    out = io.StringIO()
    assert main(["--list"], backend=backend, stdout=out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("2-1.1 (address 5) 1d50:60e3 SIMtrace 2, config 1, interface 0")
    assert "OWHW" in lines[1] and "interface 0" in lines[1]
    assert "'CardEmulator Modem 2'" in lines[2]


def test_list_tells_the_two_sam3_devices_of_a_qmod_apart_by_path() -> None:
    """Both SAM3 devices of a sysmoQMOD name their interfaces "CardEmulator Modem 1/2":
    modems 3 and 4 differ from 1 and 2 only by the USB path (-H)."""
    qmod = "sysmoQMOD (Quad Modem)"
    backend = SimulatedBackend([
        SimulatedDevice(qmod, bus=2, address=7, ports=(1, 1)),
        SimulatedDevice(qmod, bus=2, address=8, ports=(1, 2)),
    ])  # fmt: skip
    out = io.StringIO()
    assert main(["--list"], backend=backend, stdout=out) == 0
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["2-1.1", "2-1.1", "2-1.2", "2-1.2"]
    assert "'CardEmulator Modem 1'" in lines[2] and lines[2].endswith("-I 0 -H 2-1.2]")
    assert "'CardEmulator Modem 2'" in lines[3] and lines[3].endswith("-I 1 -H 2-1.2]")
    out = io.StringIO()
    assert main(["-H", "2-1.2", "-I", "1"], backend=backend, stdout=out) == 0
    assert out.getvalue().startswith("2-1.2 (address 8)")


def test_list_with_nothing_found_fails() -> None:
    err = io.StringIO()
    assert main(["--list"], backend=SimulatedBackend(), stdout=io.StringIO(), stderr=err) == 1
    assert "no card-emulation interface found" in err.getvalue()


def test_without_list_shows_the_selection_or_why_not() -> None:
    backend = SimulatedBackend([simtrace(5, (1, 1)), simtrace(9, (1, 4))])
    out, err = io.StringIO(), io.StringIO()
    assert main(["-H", "2-1.4"], backend=backend, stdout=out, stderr=err) == 0
    assert out.getvalue().startswith("2-1.4 (address 9)")
    assert main([], backend=backend, stdout=out, stderr=err) == 1
    assert "2 card-emulation interfaces match" in err.getvalue()
