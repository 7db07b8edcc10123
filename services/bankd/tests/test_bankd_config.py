"""Options, environment and the slot file (bankd.md §2, §3)."""

from __future__ import annotations

import logging
import os
from importlib.metadata import version
from pathlib import Path

import pytest

from remsim_bankd.config import (
    BankdSettings,
    SlotsCsvError,
    load_slots_csv,
    parse_args,
    parse_slots_csv,
)
from remsim_bankd.ere import PosixRegex, RegexError
from remsim_bankd.errors import BankdError, ConfigError
from remsim_common import NOTICE
from rspro import BankSlot

UPSTREAM_EXAMPLE = """\
"1","0","ACS ACR33 ICC Reader 00 00"
"1","1","ACS ACR33 ICC Reader 00 01"
"1","2","ACS ACR33 ICC Reader 00 02"
"1","3","ACS ACR33 ICC Reader 00 03"
"1","4","ACS ACR33 ICC Reader 00 04"
"1","23","Alcor Micro AU9560 00 00"
"""


def test_upstream_example_file() -> None:
    slots = parse_slots_csv(UPSTREAM_EXAMPLE)
    assert sorted(slots) == [BankSlot(1, n) for n in (0, 1, 2, 3, 4, 23)]
    assert slots[BankSlot(1, 23)].pattern == "Alcor Micro AU9560 00 00"


def test_libcsv_field_rules() -> None:
    text = (
        "\n"  # empty lines are skipped
        '  2 , 3 ,  Alcor Micro AU9560 00  \r\n'  # unquoted: trimmed; CR LF works
        '2,4," spaced "\n'  # quoted: kept as is
        '"2" , "5" ,"say ""hi"""\n'  # blanks after a closing quote; "" is a quote
        "2,6,last line without newline"
    )  # fmt: skip
    slots = parse_slots_csv(text)
    assert slots[BankSlot(2, 3)].pattern == "Alcor Micro AU9560 00"
    assert slots[BankSlot(2, 4)].pattern == " spaced "
    assert slots[BankSlot(2, 5)].pattern == 'say "hi"'
    assert slots[BankSlot(2, 6)].pattern == "last line without newline"


def test_patterns_are_posix_extended_regexes_matching_anywhere() -> None:
    slots = parse_slots_csv(
        '"1","0","sysmocom sysmoOCTSIM \\[CCID\\] \\(ab19180f\\) [0-9]{2} 00"\n'
        '"1","1","Reader 00 0"\n'
        '"1","2","Virtual PCD 00 0[[:digit:]]"\n'
    )
    assert slots[BankSlot(1, 0)].search("sysmocom sysmoOCTSIM [CCID] (ab19180f) 17 00")
    assert slots[BankSlot(1, 1)].search("ACS ACR33 ICC Reader 00 01")  # no anchors
    assert slots[BankSlot(1, 2)].search("Virtual PCD 00 01")
    assert not slots[BankSlot(1, 2)].search("Virtual PCD 00 0x")


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('"1","0","ok"\n# a comment\n', 2, "expected 3 fields"),
        ('"1","0"\n', 1, "expected 3 fields"),
        ('"1","0","a","b"\n', 1, "expected 3 fields"),
        ('"1","0","a",\n', 1, "expected 3 fields"),
        ('"x","0","a"\n', 1, "bank id 'x' is not a number"),
        ('"1","1024","a"\n', 1, "slot number '1024' is not a number"),
        ('"1","-1","a"\n', 1, "slot number '-1'"),
        ('\n\n"1","0","Reader (00"\n', 3, "bad regular expression 'Reader (00'"),
        ('"1","0",""\n', 1, "empty reader name pattern"),
        ('"1","0","a"\n"1","0","b"\n', 2, "B1:0 is already configured on line 1"),
        ('"1","0","unterminated\n', 1, "unterminated quoted field"),
        ('"1","0","a" x\n', 1, "after a quoted field"),
    ],
)
def test_bad_rows_name_file_line_and_reason(text: str, line: int, reason: str) -> None:
    with pytest.raises(SlotsCsvError) as err:
        parse_slots_csv(text, "slots.csv")
    assert err.value.line == line
    assert reason in err.value.reason
    assert str(err.value).startswith(f"slots.csv:{line}: ")
    assert isinstance(err.value, ConfigError) and isinstance(err.value, BankdError)


def test_regex_error_has_the_c_library_reason() -> None:
    with pytest.raises(RegexError, match=r"\("):
        PosixRegex("abc(")


def test_load_slots_csv_from_file(tmp_path: Path) -> None:
    path = tmp_path / "bankd_pcsc_slots.csv"
    path.write_text('"1","0","Virtual PCD 00 00"\n"1","1","Virtual PCD 00 01"\n')
    assert set(load_slots_csv(path)) == {BankSlot(1, 0), BankSlot(1, 1)}
    path.write_text('"1","0","Virtual PCD 00 00"\n"1","1","("\n')
    with pytest.raises(SlotsCsvError, match=rf"^{path}:2: bad regular expression"):
        load_slots_csv(path)
    with pytest.raises(ConfigError, match="cannot read slot file"):
        load_slots_csv(tmp_path / "missing.csv")


# --- options ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("REMSIM_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    s = parse_args(["-i", "10.0.0.1"])
    assert (s.server_host, s.server_port, s.bank_id, s.num_slots) == ("10.0.0.1", 9998, 1, 8)
    assert (s.bind_ip, s.bind_port, s.permit_shared_pcsc) == ("0.0.0.0", 9999, False)
    assert (s.gsmtap_ip, s.gsmtap_slot, s.slots_csv) == (None, -1, Path("bankd_pcsc_slots.csv"))
    assert s.card_driver == "pcsc" and s.name


def test_original_short_options() -> None:
    argv = "-i srv -p 1234 -b 7 -n 2 -N bank7 -I 127.0.0.1 -P 9000 -s -g 127.0.0.2 -G 1 -T"
    s = parse_args([*argv.split(), "-d", "DMAIN,1:DBANKDW,3", "-e", "1", "-L"])
    assert (s.server_host, s.server_port, s.bank_id, s.num_slots) == ("srv", 1234, 7, 2)
    assert (s.name, s.bind_ip, s.bind_port, s.permit_shared_pcsc) == (
        "bank7",
        "127.0.0.1",
        9000,
        True,
    )
    assert (s.gsmtap_ip, s.gsmtap_slot) == ("127.0.0.2", 1)
    assert (s.debug, s.log_level) == ("DMAIN,1:DBANKDW,3", logging.DEBUG)


@pytest.mark.parametrize(
    ("given", "level"),
    [("3", logging.INFO), ("INFO", logging.INFO), ("notice", NOTICE), ("7", logging.ERROR)],
)
def test_log_level_by_name_or_libosmocore_number(given: str, level: int) -> None:
    assert parse_args(["-i", "srv", "-e", given]).log_level == level


def test_long_options() -> None:
    s = parse_args(
        ["--server-host", "srv", "--server-port", "1", "--bank-id", "3", "--num-slots", "4",
         "--component-name", "x", "--bind-ip", "::1", "--bind-port", "0",
         "--permit-shared-pcsc", "--gsmtap-ip", "h", "--gsmtap-slot", "0",
         "--slots-csv", "/etc/osmocom/slots.csv", "--timestamp"]
    )  # fmt: skip
    assert (s.server_port, s.bank_id, s.num_slots, s.name, s.bind_ip) == (1, 3, 4, "x", "::1")
    assert s.slots_csv == Path("/etc/osmocom/slots.csv")
    assert parse_args(["-i", "s", "--name", "y"]).name == "y"
    tls = parse_args(["-i", "s", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem"])
    assert (tls.tls_cert, tls.tls_key, tls.tls_ca) == (Path("c.pem"), Path("k.pem"), Path("ca.pem"))
    assert parse_args(["-i", "s", "--log-format", "json"]).log_format == "json"


def test_environment_and_command_line_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMSIM_BANKD_SERVER_HOST", "envhost")
    monkeypatch.setenv("REMSIM_BANKD_NUM_SLOTS", "5")
    monkeypatch.setenv("REMSIM_BANKD_PERMIT_SHARED_PCSC", "1")
    monkeypatch.setenv("REMSIM_LOG_LEVEL", "ERROR")  # shared by every program of the host
    s = parse_args([])
    assert (s.server_host, s.num_slots, s.permit_shared_pcsc) == ("envhost", 5, True)
    assert s.log_level == logging.ERROR
    assert parse_args(["-n", "3"]).num_slots == 3
    assert BankdSettings(server_host="x").num_slots == 5


def test_config_file_below_environment_and_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "bankd.toml"
    config.write_text('server_host = "filehost"\nbank_id = 4\nnum_slots = 6\n')
    monkeypatch.setenv("REMSIM_BANKD_NUM_SLOTS", "5")
    s = parse_args(["--config", str(config), "-b", "3"])
    assert (s.server_host, s.bank_id, s.num_slots) == ("filehost", 3, 5)


def test_server_host_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args([])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: remsim-bankd")  # as the original: the usage first
    assert err.endswith("remsim-bankd: missing -i/--server-host (REMSIM_BANKD_SERVER_HOST)\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["-b", "1024"],
        ["-n", "0"],
        ["-n", "1024"],
        ["-p", "0"],
        ["-G", "-2"],
        ["-n", "x"],
        ["-N", "n" * 33],
        ["-e", "9"],
        ["-d", "DMAIN,x"],
        ["--card-driver", "usb"],
        ["--tls-cert", "c.pem"],
    ],
)
def test_out_of_range_values_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["-i", "srv", *argv])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("remsim-bankd: bad ")


def test_a_bad_value_names_its_option_and_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["-i", "srv", "-P", "abc"])
    err = capsys.readouterr().err
    assert err.startswith(
        "remsim-bankd: bad value 'abc' for -P/--bind-port (REMSIM_BANKD_BIND_PORT)"
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["-V"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"remsim-bankd {version('remsim-bankd')}\n"
