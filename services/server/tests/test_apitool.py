"""remsim-apitool against the real server: the original's flags and output."""

import asyncio
import io
import socket
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest

import rspro
from remsim_api import apitool
from remsim_server.server import RemsimServer
from remsim_testing.server import connect_bankd, connect_client


async def run(*argv: str) -> int:
    """Run the tool in a thread (it is synchronous) and return its exit status."""
    try:
        await asyncio.to_thread(apitool.main, list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def port_args(server: RemsimServer) -> list[str]:
    return ["-H", "127.0.0.1", "-p", str(server.rest_port)]


async def test_show_all_prints_clients_banks_and_slotmaps(
    server: RemsimServer, capsys: pytest.CaptureFixture[str]
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    client = await connect_client(server.rspro_port)
    assert await run(*port_args(server)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        "/clients: {'clients': [{'peer': 'C23:0', 'state': 'CONNECTED_CLIENT', 'component_id': "
        "{'type_': 'remsimClient', 'name': 'vm', 'software': 'remsim-client', 'swVersion': "
        "'1.0.0'}"
    )
    assert lines[1].startswith("/banks: {'banks': [{'peer': 'B1', 'state': 'CONNECTED_BANKD'")
    assert lines[2] == "/slotmaps: {'slotmaps': []}"
    assert len(lines) == 3
    await client.aclose()
    await bankd.aclose()


async def test_create_show_and_delete_a_slotmap(
    server: RemsimServer, capsys: pytest.CaptureFixture[str]
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    assert await run(*port_args(server), "-m", "1", "1", "23", "0") == 0
    request, _ = await bankd.expect(rspro.CreateMappingReq)
    assert str(request.bank) == "B1:1" and str(request.client) == "C23:0"
    assert await run(*port_args(server), "-s") == 0
    assert await run(*port_args(server), "-s", "65537") == 0
    assert await run(*port_args(server), "-d", "1", "1") == 0
    await bankd.expect(rspro.RemoveMappingReq)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "/slotmaps: {'slotmaps': [{'bank': {'bankId': 1, 'slotNr': 1}, 'client': "
        "{'clientId': 23, 'slotNr': 0}, 'state': 'UNACKNOWLEDGED', 'id': 65537}]}",
        "/slotmaps/65537: {'bank': {'bankId': 1, 'slotNr': 1}, 'client': "
        "{'clientId': 23, 'slotNr': 0}, 'state': 'UNACKNOWLEDGED', 'id': 65537}",
    ]


async def test_verbose_shows_the_requests(
    server: RemsimServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run(*port_args(server), "-v", "-r") == 0
    assert capsys.readouterr().out.splitlines() == [
        "verbosity =  1",
        f"POST http://127.0.0.1:{server.rest_port}/api/backend/v1/global-resetNone",
    ]


async def test_an_error_answer_is_one_line_on_stderr(
    server: RemsimServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run(*port_args(server), "-m", "1", "0", "23", "0") == 0
    assert await run(*port_args(server), "-m", "1", "0", "24", "0") == 1
    assert await run(*port_args(server), "-b", "7") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "remsim-apitool: POST /slotmaps failed: 409 Conflict: "
        "Slot Map B1:0 <-> C23:0 already uses this bank slot or client slot",
        "remsim-apitool: GET /banks/7 failed: 404 Not Found: bank 7 is not connected",
    ]


async def test_an_unreachable_server_is_one_line_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for command in (["-c"], ["-r"], ["-d", "1", "0"]):
        assert await run("-p", str(port), *command) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("remsim-apitool: ") and "failed" in line for line in lines)


def test_commands_are_mutually_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        apitool.main(["-r", "-c"])
    assert exited.value.code == 2
    args = apitool.build_parser().parse_args(["-P", "1234", "-c", "23"])
    assert (args.port, args.show_clients) == (1234, "23")


def test_version_and_the_default_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        apitool.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"remsim-apitool {metadata.version('remsim-api')}\n"
    assert apitool.build_parser().parse_args([]).port == 9997


# --- remsim's own: a fleet's maps from a file, through POST /api/v1/slotmaps:batch ----------


async def test_create_slotmaps_makes_the_maps_of_a_file_a_batch_at_a_time(
    server: RemsimServer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bankd = await connect_bankd(server.rspro_port)
    requests: list[str] = []
    monkeypatch.setattr(apitool, "BATCH", 2)  # three maps: two requests
    original = apitool.Api._request

    def counted(self: apitool.Api, method: str, suffix: str, *args: Any, **kw: Any) -> Any:
        requests.append(f"{method} {suffix}")
        return original(self, method, suffix, *args, **kw)

    monkeypatch.setattr(apitool.Api, "_request", counted)
    maps = tmp_path / "maps.txt"
    maps.write_text("# bank slot, client slot\n1 0 23 0\n\n1,1, 24,0\n1 2 25 0  # the last\n")
    assert await run(*port_args(server), "--create-slotmaps", str(maps)) == 0
    assert requests == ["POST /slotmaps:batch"] * 2
    made = sorted([str((await bankd.expect(rspro.CreateMappingReq))[0].bank) for _ in range(3)])
    assert made == ["B1:0", "B1:1", "B1:2"]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["2", "4", "5"]  # the file's line numbers
    assert all("'status': 201" in line for line in lines)
    assert "'bank': {'bankId': 1, 'slotNr': 1}, 'client': {'clientId': 24" in lines[1]


async def test_create_slotmaps_tries_every_map_and_fails_if_one_was_not_made(
    server: RemsimServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("1 0 23 0\n1 0 24 0\n89490200000000000099 25 0\n"))
    assert await run(*port_args(server), "--create-slotmaps", "-") == 1
    captured = capsys.readouterr()
    statuses = [line.split("'status': ")[1][:3] for line in captured.out.splitlines()]
    assert statuses == ["201", "409", "404"]  # made; bank slot in use; no such card
    assert captured.err == "remsim-apitool: 2 of 3 slotmaps not made\n"


async def test_create_slotmaps_refuses_a_bad_line_before_sending_anything(
    server: RemsimServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    maps = tmp_path / "maps.txt"
    maps.write_text("1 0 23 0\n1 0 x 0\n")
    assert await run(*port_args(server), "--create-slotmaps", str(maps)) == 1
    assert capsys.readouterr().err == "remsim-apitool: not a client id or slot number: 'x'\n"
    maps.write_text("1 0 23\n1 0\n")
    assert await run(*port_args(server), "--create-slotmaps", str(maps)) == 1
    assert "line 2: BANK_ID BANK_SLOT CLIENT_ID CLIENT_SLOT or ICCID" in capsys.readouterr().err
    assert await run(*port_args(server), "--create-slotmaps", str(tmp_path / "none")) == 1
    assert "cannot read" in capsys.readouterr().err
    async with httpx.AsyncClient() as http:
        listed = await http.get(f"http://127.0.0.1:{server.rest_port}/api/backend/v1/slotmaps")
    assert listed.json() == {"slotmaps": []}


def test_the_batch_is_the_apis_largest() -> None:
    from remsim_api.schemas import BATCH_MAX

    assert apitool.BATCH == BATCH_MAX
