"""The client's small parts: hex formats, options, log mask, shell input, event script."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest

from remsim_client.config import hexdump, parse_atr
from remsim_client.errors import ConfigError
from remsim_client.frontend import POWER_OFF
from remsim_client.logs import NOTICE, parse_debug_mask
from remsim_client.main_fsm import NO_STATUS
from remsim_client.options import build_parser, load_settings
from remsim_client.script import ScriptRunner, remsim_env
from remsim_client.shell import LineSplitter, ShellFrontend, main
from rspro import BankSlot, ClientSlot, SlotPhysStatus


class TestHex:
    def test_hexdump_is_lower_case_with_a_space_after_every_byte(self) -> None:
        assert hexdump(bytes.fromhex("9F17")) == "9f 17 "
        assert hexdump(b"") == ""

    @pytest.mark.parametrize("text", ["3B 00", "3b00", "3 b\t0\n0", "3B9F96801FC78031A073BE21"])
    def test_atr_accepts_hex_with_whitespace(self, text: str) -> None:
        assert parse_atr(text) == bytes.fromhex("".join(text.split()))

    @pytest.mark.parametrize("text", ["3B0", "3B", "zz00", "", "00" * 56])
    def test_malformed_atrs(self, text: str) -> None:
        with pytest.raises(ConfigError, match="ATR malformed"):
            parse_atr(text)


class TestOptions:
    def settings(self, *argv: str):  # type: ignore[no-untyped-def]
        return load_settings(build_parser("t", "t").parse_args(list(argv)))

    def test_defaults_are_the_originals(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for key in list(os.environ):
            if key.startswith("REMSIM_CLIENT_"):
                monkeypatch.delenv(key)
        cfg = self.settings().client_config()
        assert (cfg.server_host, cfg.server_port) == ("127.0.0.1", 9998)
        assert cfg.client_slot == ClientSlot(0, 0)  # -1 ("not set") goes out as 0
        assert cfg.atr == bytes.fromhex("3b00")
        assert cfg.event_script is None and not cfg.atr_ignore_rspro
        assert cfg.software == "remsim-client"

    def test_short_options(self) -> None:
        s = self.settings("-i", "10.0.0.1", "-p", "1234", "-c", "23", "-n", "1", "-a", "3b 02 aabb")
        cfg = self.settings("-r", "-e", "/bin/true", "-d", "DMAIN,1", "-L").client_config()
        assert cfg.atr_ignore_rspro and cfg.event_script == "/bin/true"
        cfg = s.client_config()
        assert (cfg.server_host, cfg.server_port, cfg.client_slot) == (
            "10.0.0.1",
            1234,
            ClientSlot(23, 1),
        )
        assert cfg.atr == bytes.fromhex("3b02aabb")

    def test_long_options(self) -> None:
        cfg = self.settings(
            "--server-host=h", "--server-port", "1", "--client-id=5", "--client-slot=6",
            "--atr-ignore-rspro", "--event-script", "x", "--name", "vm", "--sw-version", "1.0.0",
        ).client_config()  # fmt: skip
        assert (cfg.server_host, cfg.client_slot, cfg.name, cfg.sw_version) == (
            "h",
            ClientSlot(5, 6),
            "vm",
            "1.0.0",
        )
        assert self.settings("--server-ip", "k").server_host == "k"

    def test_environment_variables_and_options_win(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REMSIM_CLIENT_SERVER_HOST", "10.9.9.9")
        monkeypatch.setenv("REMSIM_CLIENT_CLIENT_ID", "42")
        monkeypatch.setenv("REMSIM_CLIENT_ATR_IGNORE_RSPRO", "true")
        cfg = self.settings("-c", "7").client_config()
        assert cfg.server_host == "10.9.9.9"
        assert cfg.client_slot == ClientSlot(7, 0)
        assert cfg.atr_ignore_rspro

    def test_malformed_atr_exits_with_status_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main(["-a", "3b0"])
        assert exc.value.code == 2
        assert "ATR malformed" in capsys.readouterr().err

    @pytest.mark.parametrize(
        "argv", [["-c", "5000"], ["-n", "1024"], ["--client-id=-2"], ["-n", "x"], ["-c", "0x17"]]
    )
    def test_client_id_and_slot_out_of_0_1023_exit_with_status_2(
        self, argv: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "--client-" in capsys.readouterr().err

    def test_edges_of_the_range(self) -> None:
        cfg = self.settings("-c", "1023", "-n", "0").client_config()
        assert cfg.client_slot == ClientSlot(1023, 0)

    @pytest.mark.parametrize("value", ["1024", "-2"])
    def test_client_id_out_of_range_in_the_environment_exits_with_status_2(
        self, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("REMSIM_CLIENT_CLIENT_ID", value)
        with pytest.raises(SystemExit) as exc:
            main([])
        assert exc.value.code == 2
        assert "REMSIM_CLIENT_CLIENT_ID" in capsys.readouterr().err

    def test_unknown_options_are_rejected(self) -> None:
        with pytest.raises(SystemExit) as exc:
            main(["--no-such-option"])
        assert exc.value.code == 2

    def test_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main(["-v"])
        assert exc.value.code == 0
        assert capsys.readouterr().out.startswith("remsim-client version ")


class TestDebugMask:
    def test_levels_are_libosmocore_numbers(self) -> None:
        assert parse_debug_mask("DMAIN,5:DRSPRO,1") == {"DMAIN": NOTICE, "DRSPRO": logging.DEBUG}
        assert parse_debug_mask("dst2") == {"DST2": logging.DEBUG}
        assert parse_debug_mask("DMAIN,3:DST2,7:DRSPRO,8") == {
            "DMAIN": logging.INFO,
            "DST2": logging.ERROR,
            "DRSPRO": logging.CRITICAL,
        }

    def test_unknown_category(self) -> None:
        with pytest.raises(ValueError):
            parse_debug_mask("DFOO,1")


class RecordingCore:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def modem_tpdu(self, data: bytes) -> bool:
        self.events.append(("tpdu", data))
        return True

    def modem_status(self, status: SlotPhysStatus) -> None:
        self.events.append(("status", status))

    def modem_pts(self, pts: bytes) -> None:
        self.events.append(("pts", pts))


class TestShellInput:
    def shell(self) -> tuple[ShellFrontend, RecordingCore, io.StringIO, io.StringIO]:
        out, err, core = io.StringIO(), io.StringIO(), RecordingCore()
        shell = ShellFrontend(out, err)
        shell.attach(core)
        return shell, core, out, err

    def test_lines_end_with_lf_cr_or_crlf_whatever_the_chunks(self) -> None:
        s = LineSplitter()
        assert s.feed(b"a0a4\r") == [b"a0a4"]
        assert s.feed(b"\nRESET\n00") == [b"RESET"]
        assert s.feed(b"b0\r\n\r\nx") == [b"00b0", b""]
        assert s.finish() == [b"x"]

    def test_hex_lines_become_tpdus(self) -> None:
        shell, core, _, _ = self.shell()
        shell.handle_line("A0 A4 00 00 02 3f\t00  ")
        assert core.events == [("tpdu", bytes.fromhex("a0a40000023f00"))]

    @pytest.mark.parametrize("line", ["RESET", "reset", " Reset "])
    def test_reset_reports_rst_1_vcc_0_clk_0_card_1(self, line: str) -> None:
        shell, core, _, _ = self.shell()
        shell.handle_line(line)
        assert core.events == [("status", POWER_OFF)]

    @pytest.mark.parametrize("line", ["a0a4x", "a0a", "00" * 1025])
    def test_parse_errors_go_to_stderr(self, line: str) -> None:
        shell, core, out, err = self.shell()
        shell.handle_line(line)
        assert core.events == [] and out.getvalue() == ""
        assert err.getvalue() == f"ERROR parsing C-APDU `{line}'!\n"

    def test_empty_lines_are_ignored(self) -> None:
        shell, core, _, err = self.shell()
        shell.handle_line("  \t")
        assert core.events == [] and err.getvalue() == ""

    def test_output_lines(self) -> None:
        shell, _, out, _ = self.shell()
        shell.set_atr(bytes.fromhex("3b00"))
        shell.card_to_modem(bytes.fromhex("9f17"))
        assert out.getvalue() == "SET_ATR: 3b 00 \nR-APDU: 9f 17 \n"


class TestEventScript:
    ENV = {
        "REMSIM_CLIENT_VERSION": "1.0.0",
        "REMSIM_SERVER_ADDR": "127.0.0.1:9998",
        "REMSIM_SERVER_STATE": "CONNECTED",
        "REMSIM_BANKD_ADDR": "(null):0",
        "REMSIM_BANKD_STATE": "INIT",
        "REMSIM_CLIENT_SLOT": "23:0",
        "REMSIM_BANKD_SLOT": "0:0",
        "REMSIM_SIM_VCC": "0",
        "REMSIM_SIM_RST": "0",
        "REMSIM_SIM_CLK": "0",
        "REMSIM_CAUSE": "event-server-connect",
    }

    def env(self, **overrides: object) -> dict[str, str]:
        args: dict[str, object] = {
            "version": "1.0.0",
            "server_host": "127.0.0.1",
            "server_port": 9998,
            "server_state": "CONNECTED",
            "bankd_host": None,
            "bankd_port": 0,
            "bankd_state": "INIT",
            "client_slot": ClientSlot(23, 0),
            "bank_slot": BankSlot(0, 0),
            "modem_status": NO_STATUS,
            "cause": "event-server-connect",
        }
        return remsim_env(**{**args, **overrides})  # type: ignore[arg-type]

    def test_variables_before_any_configuration(self) -> None:
        env = self.env()
        assert env == self.ENV
        assert list(env) == list(self.ENV)  # the original's order

    def test_variables_after_configuration_and_reset(self) -> None:
        env = self.env(
            bankd_host="192.168.1.10",
            bankd_port=9999,
            bank_slot=BankSlot(1, 5),
            modem_status=POWER_OFF,
            cause="event-modem-status",
        )
        assert env["REMSIM_BANKD_ADDR"] == "192.168.1.10:9999"
        assert env["REMSIM_BANKD_SLOT"] == "1:5"
        assert (env["REMSIM_SIM_VCC"], env["REMSIM_SIM_RST"], env["REMSIM_SIM_CLK"]) == (
            "0",
            "1",
            "0",
        )

    def test_unknown_flags_are_minus_one(self) -> None:
        env = self.env(modem_status=SlotPhysStatus(False, None, None))
        assert (env["REMSIM_SIM_VCC"], env["REMSIM_SIM_CLK"]) == ("-1", "-1")

    def test_runs_sh_c_script_cause_with_a_filtered_environment(self, tmp_path: Path) -> None:
        out = tmp_path / "out"
        runner = ScriptRunner(
            f"echo >{out}",  # the -e value is shell syntax; the cause is appended
            environ={"PATH": os.environ["PATH"], "HOME": "/h", "SECRET": "x"},
        )
        started = time.monotonic()
        proc = runner.run("request-card-insert", {"REMSIM_CAUSE": "request-card-insert"})
        assert time.monotonic() - started < 0.5  # never waits for the script
        assert isinstance(proc, subprocess.Popen)
        proc.wait(5)
        assert out.read_text() == "request-card-insert\n"
        env_out = tmp_path / "env"
        ScriptRunner(f"env >{env_out}; true", environ={"HOME": "/h", "SECRET": "x"}).run(
            "x", {"REMSIM_CAUSE": "x"}
        ).wait(5)  # type: ignore[union-attr]
        lines = set(env_out.read_text().split())
        assert {"HOME=/h", "REMSIM_CAUSE=x"} <= lines
        assert not any(line.startswith("SECRET=") for line in lines)
