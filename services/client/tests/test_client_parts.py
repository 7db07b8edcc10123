"""The client's small parts: hex formats, options, logging, shell input, event script."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remsim_client.config import hexdump, package_version, parse_atr
from remsim_client.errors import ConfigError
from remsim_client.frontend import POWER_OFF
from remsim_client.main_fsm import NO_STATUS, ClientFsm
from remsim_client.options import ClientSettings, client_parser
from remsim_client.script import ScriptRunner, remsim_env
from remsim_client.shell import PROGRAM, LineSplitter, ShellFrontend, main
from remsim_common import NOTICE, TransportSecurity
from rspro import BankSlot, ClientSlot, ConfigClientBankReq, IpPort, SlotPhysStatus


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


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No REMSIM_* variables from the environment the tests run in."""
    for key in list(os.environ):
        if key.startswith("REMSIM_"):
            monkeypatch.delenv(key)


@pytest.mark.usefixtures("clean_env")
class TestOptions:
    def settings(self, *argv: str) -> ClientSettings:
        return PROGRAM.load(ClientSettings, client_parser(PROGRAM, "t"), list(argv))

    def test_defaults_are_the_originals(self) -> None:
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

    def test_a_config_file_below_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        config = tmp_path / "client.toml"
        config.write_text('server_host = "10.1.1.1"\nclient_id = 23\natr = "3b 02 1122"\n')
        monkeypatch.setenv("REMSIM_CLIENT_CLIENT_ID", "24")
        cfg = self.settings("--config", str(config)).client_config()
        assert cfg.server_host == "10.1.1.1"
        assert cfg.client_slot == ClientSlot(24, 0)
        assert cfg.atr == bytes.fromhex("3b021122")

    def test_the_shared_logging_and_tls_options_come_from_remsim_too(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("REMSIM_LOG_FORMAT", "json")
        monkeypatch.setenv("REMSIM_LOG_LEVEL", "NOTICE")
        settings = self.settings()
        assert settings.log_format == "json" and settings.log_level == NOTICE
        assert TransportSecurity.from_settings(settings) is TransportSecurity.PLAINTEXT

    @pytest.mark.parametrize("level", ["INFO", "3", "info"])
    def test_the_log_level_is_a_name_or_a_libosmocore_number(self, level: str) -> None:
        assert self.settings("--log-level", level).log_level == logging.INFO

    def test_e_stays_the_event_script(self) -> None:
        settings = self.settings("-e", "3")
        assert settings.event_script == "3" and settings.log_level is None

    def test_malformed_atr_exits_with_status_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main(["-a", "3b0"])
        assert exc.value.code == 2
        assert capsys.readouterr().err == (
            "remsim-client-shell: bad value '3b0' for -a/--atr (REMSIM_CLIENT_ATR): ATR malformed\n"
        )

    @pytest.mark.parametrize(
        "argv", [["-c", "5000"], ["-n", "1024"], ["--client-id=-2"], ["-n", "x"], ["-c", "0x17"]]
    )
    def test_client_id_and_slot_out_of_0_1023_exit_with_status_2(
        self, argv: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("remsim-client-shell: bad value ") and "--client-" in err
        assert err.count("\n") == 1

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

    def test_half_the_tls_files_is_a_usage_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exc:
            main(["--tls-cert", str(tmp_path / "c.pem")])
        assert exc.value.code == 2
        assert "TLS needs all three" in capsys.readouterr().err

    def test_unusable_tls_files_are_one_line_and_status_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        files = [tmp_path / name for name in ("c.pem", "k.pem", "ca.pem")]
        for file in files:
            file.write_text("not PEM\n")
        with pytest.raises(SystemExit) as exc:
            main(
                [
                    f"--tls-{kind}={file}"
                    for kind, file in zip(("cert", "key", "ca"), files, strict=True)
                ]
            )
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("remsim-client-shell: cannot use the TLS files: ")
        assert err.count("\n") == 1

    @pytest.mark.parametrize("flag", ["-v", "--version"])
    def test_version(self, flag: str, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main([flag])
        assert exc.value.code == 0
        assert capsys.readouterr().out == f"remsim-client-shell {package_version()}\n"


@pytest.mark.usefixtures("clean_env")
class TestLogging:
    """-d maps the original's categories to the client's loggers; text or JSON on stderr."""

    def setup(self, *argv: str) -> io.StringIO:
        settings = PROGRAM.load(ClientSettings, client_parser(PROGRAM, "t"), list(argv))
        stream = io.StringIO()
        PROGRAM.setup_logging(settings, stream)
        return stream

    @pytest.fixture(autouse=True)
    def _restore_logging(self) -> Iterator[None]:
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        yield
        root.handlers[:], root.level = handlers, level
        logging.captureWarnings(False)
        for name in ("remsim.client", "rspro"):
            logging.getLogger(name).setLevel(logging.NOTSET)

    def test_categories_are_the_client_and_rspro_loggers(self) -> None:
        self.setup("-d", "DMAIN,1:DRSPRO,7")
        assert logging.getLogger("remsim.client").getEffectiveLevel() == logging.DEBUG
        assert logging.getLogger("remsim.client.vpcd").getEffectiveLevel() == logging.DEBUG
        assert logging.getLogger("rspro.link").getEffectiveLevel() == logging.ERROR

    def test_a_category_left_out_of_the_mask_is_off(self) -> None:
        stream = self.setup("-d", "DMAIN,3")
        logging.getLogger("rspro.link").error("not shown")
        logging.getLogger("remsim.client").info("shown")
        assert stream.getvalue().count("\n") == 1 and "shown" in stream.getvalue()

    def test_json_lines_carry_the_slots_as_fields(self) -> None:
        stream = self.setup("--log-format", "json")
        fsm = ClientFsm(ClientSlot(23, 0))
        fsm.server_connected()
        fsm.config_bank(
            ConfigClientBankReq(BankSlot(1, 5), IpPort(ipaddress.IPv4Address("10.0.0.2"), 9999))
        )
        entries = [json.loads(line) for line in stream.getvalue().splitlines()]
        rx = next(e for e in entries if e["message"].startswith("Rx configClientBankReq"))
        assert rx["logger"] == "remsim.client" and rx["level"] == "INFO"
        assert rx["message"] == "Rx configClientBankReq(10.0.0.2:9999)"
        assert (rx["client_slot"], rx["bank_slot"]) == ("C23:0", "B1:5")


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
