"""The systemd units: hardened, with room for many connections, and valid for systemd.

``systemd-analyze verify`` checks each unit as systemd would load it, with ``ExecStart``
pointed at this workspace's programs (the units name ``/usr/local/bin``) and the files
they read made up; it is skipped, with the reason, where systemd-analyze is missing.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
BIN = Path(sys.executable).parent
DOCDIR = "/usr/local/share/doc/remsim"
HARDENING = {
    "LimitNOFILE": "65536",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
}


def service(unit: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    return dict(parser["Service"])


@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_every_unit_is_hardened(unit: Path) -> None:
    options = service(unit)
    for key, value in HARDENING.items():
        assert options.get(key) == value, f"{unit.name}: {key}"


@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_every_unit_runs_as_a_dynamic_user(unit: Path) -> None:
    assert service(unit).get("DynamicUser") == "yes", unit.name


@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_every_unit_documents_itself_with_the_docs_make_install_installs(unit: Path) -> None:
    """``Documentation=`` names files of ``PREFIX/share/doc/remsim`` (PREFIX=/usr/local, the
    default; scripts/install.sh rewrites it for another) that are in docs/."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(unit.read_text())
    documentation = parser["Unit"]["Documentation"].split()
    assert documentation
    for url in documentation:
        name = url.removeprefix(f"file://{DOCDIR}/")
        assert name != url and (ROOT / "docs" / name).is_file(), url


@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_every_environment_file_has_its_example(unit: Path) -> None:
    """``/etc/default/NAME`` comes from ``deploy/systemd/NAME.default`` (make install), except
    the st2 client's per-instance file, which its example describes."""
    files = re.findall(r"^EnvironmentFile=-?/etc/default/(\S+)$", unit.read_text(), flags=re.M)
    assert files
    for name in files:
        example = name.split("@")[0] if "%i" in name else name
        assert (ROOT / "deploy" / "systemd" / f"{example}.default").is_file(), name


def test_the_udev_rule_names_every_simtrace2_board() -> None:
    """The st2 client's dynamic user opens the boards through the group plugdev."""
    from remsim_client.st2.usb import BOARDS, VENDOR_ID

    rule = (ROOT / "deploy" / "systemd" / "60-remsim-simtrace2.rules").read_text()
    assert f'ATTRS{{idVendor}}=="{VENDOR_ID:04x}"' in rule
    products = re.search(r'ATTRS\{idProduct\}=="([^"]+)"', rule)
    assert products is not None
    assert set(products.group(1).split("|")) == {f"{board.product_id:04x}" for board in BOARDS}
    assert 'GROUP="plugdev"' in rule
    unit = service(ROOT / "deploy" / "systemd" / "remsim-client-st2@.service")
    assert unit["SupplementaryGroups"] == "plugdev"


def test_the_server_keeps_its_state_in_its_state_directory() -> None:
    options = service(ROOT / "deploy" / "systemd" / "remsim-server.service")
    assert options["StateDirectory"] == "remsim"
    assert "REMSIM_STATE_DIR=%S/remsim" in options["Environment"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    text = re.sub(r"/usr/local/bin/(\S+)", lambda m: str(BIN / m.group(1)), unit.read_text())
    text = re.sub(r"^EnvironmentFile=-?", "EnvironmentFile=-", text, flags=re.M)
    text = text.replace("WorkingDirectory=/etc/remsim", f"WorkingDirectory={tmp_path}")
    copy = tmp_path / unit.name.replace("@.", "@modem1.")
    copy.write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # Only what concerns our unit: the host's own units may have findings of their own.
    ours = [line for line in done.stderr.splitlines() if copy.name in line or unit.stem in line]
    assert not ours, done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_verify_check_sees_a_broken_unit(tmp_path: Path) -> None:
    broken = tmp_path / "remsim-broken.service"
    broken.write_text("[Service]\nExecStart=/nonexistent\nLimitNOFILE=lots\n")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(broken)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "remsim-broken.service" in done.stderr and "not executable" in done.stderr
