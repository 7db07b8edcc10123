"""The ``rspro`` command: ``decode HEX...`` and ``pcap FILE`` (on the reference captures:
every message that messages.jsonl lists must come out, with the same content)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from rspro import pcap
from rspro.cli import main

SCENARIOS = [
    "s1_basic_mapping",
    "s2_rest_errors",
    "s3_bankd_restart",
    "s4_client_kill",
    "s5_keepalive_idle",
    "s6_server_restart",
    "s7_rest_quirks_dup_client",
    "s8_curl_transcripts",
    "s9_ifdhandler_client",
    "perf_quickack_captured",
    "perf_atr_captured",
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main(list(argv))
    return code, capsys.readouterr().out.splitlines()


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    code, lines = run(capsys, *argv)
    assert code == 0
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def expected(reference_dir: Path) -> dict[str, list[dict[str, Any]]]:
    by_scenario: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in (reference_dir / "messages.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_scenario[record["scenario"]].append(record)
    return by_scenario


def test_version_is_name_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("-V", "--version"):
        with pytest.raises(SystemExit) as exited:
            main([flag])
        assert exited.value.code == 0
        assert capsys.readouterr().out == f"rspro {metadata.version('rspro')}\n"


# --- rspro decode -------------------------------------------------------------------------

CONNECT_BANK_REQ = (
    "00 37 EE 07 30 34 80 01 02 81 01 00 A2 2C A0 2A 30 22 0A 01 02 16 08 62 61 6E 6B 68 6F 73"
    " 74 80 0C 72 65 6D 73 69 6D 2D 62 61 6E 6B 64 81 05 31 2E 30 2E 30 02 01 01 02 01 08"
)


def test_decode_a_frame_pasted_with_spaces(capsys: pytest.CaptureFixture[str]) -> None:
    (item,) = run_json(capsys, "decode", *CONNECT_BANK_REQ.split())
    assert item["kind"] == "RSPRO"
    assert item["msg_type"] == "connectBankReq"
    assert item["pdu"] == {
        "version": 2,
        "tag": 0,
        "msg": {
            "connectBankReq": {
                "identity": {
                    "type": "remsimBankd",
                    "name": "bankhost",
                    "software": "remsim-bankd",
                    "swVersion": "1.0.0",
                },
                "bankId": 1,
                "numberOfSlots": 8,
            }
        },
    }
    assert item["raw_hex"] == CONNECT_BANK_REQ.replace(" ", "").lower()


def test_decode_several_frames_and_bare_pdus(capsys: pytest.CaptureFixture[str]) -> None:
    items = run_json(
        capsys,
        "decode",
        "0001fe00 0001fe01",
        "0x00,0x01,0xfe,0x06".replace(",", " "),
        "300d800102810100a205a5030a0164",  # bare PDU, no IPA header
        "00:10:ee:07:30:0d:80:01:02:81:01:00:a2:05:a7:03:0a:01:05",
    )
    assert [i["kind"] for i in items] == ["IPA_CCM"] * 3 + ["RSPRO"] * 2
    assert [i.get("ccm_msg_name") for i in items[:3]] == ["PING", "PONG", "ID_ACK"]
    assert items[3]["pdu"]["msg"] == {"createMappingRes": {"result": "cardNotPresent"}}
    assert "raw_hex" not in items[3]
    assert items[4]["pdu"]["msg"] == {"removeMappingRes": {"result": "unknownSlotmap"}}


def test_decode_reads_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("0001fe00\n0001fe01\n"))
    assert [i["ccm_msg_name"] for i in run_json(capsys, "decode")] == ["PING", "PONG"]


def test_decode_ipa_identity_messages(capsys: pytest.CaptureFixture[str]) -> None:
    id_get = "0005fe04 0108 0107"
    id_resp = "000afe05 0007 08 302f302f3000"
    get, resp = run_json(capsys, "decode", id_get, id_resp)
    assert get["ids"] == ["UNIT", "MACADDR"]
    assert resp["ids"] == {"UNIT": "0/0/0"}


def test_decode_reports_what_it_cannot_decode(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run(
        capsys,
        "decode",
        "0005ee07300302",  # truncated IPA frame
    )
    assert code == 1
    assert json.loads(lines[0])["error"] == "truncated IPA frame"
    code, lines = run(capsys, "decode", "0006ee073003020100", "0002420000", "0002ee0501")
    items = [json.loads(line) for line in lines]
    assert code == 1
    assert items[0]["kind"] == "RSPRO" and "error" in items[0]
    assert items[1]["kind"] == "IPA" and items[1]["ipa_proto"] == "0x42"
    assert items[2]["kind"] == "IPA_OSMO" and items[2]["ipa_ext"] == "0x05"


def test_decode_rejects_what_is_not_hex(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "00 01 fe 0g"]) == 2
    assert "not hex" in capsys.readouterr().err


def test_console_script(capsys: pytest.CaptureFixture[str]) -> None:
    script = shutil.which("rspro", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("rspro console script not installed in this environment")
    out = subprocess.run([script, "decode", "0001fe00"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["ccm_msg_name"] == "PING"


# --- rspro pcap on the reference captures -------------------------------------------------


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    keys = ["frame", "tcp_stream", "src_port", "dst_port", "kind", "raw_hex", "ipa_len"]
    keys += ["msg_type", "rspro_version", "rspro_tag", "pdu", "ccm_msg_name"]
    out = {k: record[k] for k in keys if k in record}
    # the capture cannot tell the driver's readiness probe from any other silent peer
    out["direction"] = record["direction"].replace("harness-probe", "peer")
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pcap_finds_every_recorded_message(
    scenario: str,
    capsys: pytest.CaptureFixture[str],
    reference_dir: Path,
    expected: dict[str, list[dict[str, Any]]],
) -> None:
    got = run_json(capsys, "pcap", "--json", str(reference_dir / f"{scenario}.pcap"))
    want = expected[scenario]
    assert [_comparable(g) for g in got] == [_comparable(w) for w in want]
    for g, w in zip(got, want, strict=True):
        assert g["t_rel"] == pytest.approx(w["t_rel"], abs=2e-6)
        assert g["time"] == pytest.approx(w["t_epoch"], abs=2e-6)


def test_pcap_text_output(capsys: pytest.CaptureFixture[str], reference_dir: Path) -> None:
    code, lines = run(capsys, "pcap", str(reference_dir / "s1_basic_mapping.pcap"))
    assert code == 0
    assert len(lines) == 108
    head, body = lines[5].split("{", 1)
    assert head.split() == [
        *("0.557193", "#26", "bankd->server", "127.0.0.1:44035", ">", "127.0.0.1:9998"),
        *("RSPRO", "connectBankReq"),
    ]
    assert json.loads("{" + body) == {
        "identity": {
            "type": "remsimBankd",
            "name": "fixme-name",
            "software": "remsim-bankd",
            "swVersion": "1.0.0",
        },
        "bankId": 1,
        "numberOfSlots": 2,
    }
    tpdu = next(line for line in lines if "tpduModemToCard" in line)
    assert tpdu.endswith(
        '{"fromClientSlot": "C23:0", "toBankSlot": "B1:0", "data": "a0a40000023f00"}'
    )
    assert any("tag=2342" in line for line in lines)


def test_pcap_ports_option(capsys: pytest.CaptureFixture[str], reference_dir: Path) -> None:
    s1 = str(reference_dir / "s1_basic_mapping.pcap")
    items = run_json(capsys, "pcap", "--json", "--ports", "9999", s1)
    assert items and {i["direction"] for i in items} == {"client->bankd", "bankd->client"}
    assert run_json(capsys, "pcap", "--json", "--ports", "1234", s1) == []


def test_pcap_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["pcap", str(tmp_path / "missing.pcap")]) == 2
    (tmp_path / "text.pcap").write_text("hello, not a capture")
    assert main(["pcap", str(tmp_path / "text.pcap")]) == 2
    assert "not a pcap or pcapng file" in capsys.readouterr().err
    assert main(["pcap", "--ports", "x", str(tmp_path / "text.pcap")]) == 2


def test_pcapng_from_editcap(
    capsys: pytest.CaptureFixture[str], reference_dir: Path, tmp_path: Path
) -> None:
    editcap = shutil.which("editcap")
    if editcap is None:
        pytest.skip("editcap (wireshark) not installed")
    src = reference_dir / "s4_client_kill.pcap"
    dst = tmp_path / "s4.pcapng"
    subprocess.run([editcap, "-F", "pcapng", str(src), str(dst)], check=True, capture_output=True)
    assert dst.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert run_json(capsys, "pcap", "--json", str(dst)) == run_json(
        capsys, "pcap", "--json", str(src)
    )


# --- other link layers, IPv6, and TCP reassembly on synthetic captures --------------------


def write_pcap(path: Path, linktype: int, packets: list[tuple[float, bytes]]) -> None:
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        for t, data in packets:
            sec = int(t)
            f.write(struct.pack("<IIII", sec, round((t - sec) * 1e6), len(data), len(data)))
            f.write(data)


def ip_packets(path: Path) -> list[tuple[float, bytes]]:
    """The IP packets of an Ethernet capture."""
    return [(p.time, p.data[14:]) for p in pcap.read_packets(path)]


def to_ipv6(ip4: bytes) -> bytes:
    ihl, total = (ip4[0] & 0x0F) * 4, int.from_bytes(ip4[2:4], "big")
    tcp = ip4[ihl:total]
    loopback = bytes(15) + b"\x01"
    return b"\x60\x00\x00\x00" + len(tcp).to_bytes(2, "big") + b"\x06\x40" + loopback * 2 + tcp


LINK_LAYERS: dict[str, tuple[int, Callable[[bytes], bytes]]] = {
    "linux-sll": (113, lambda ip: b"\x00\x00\x03\x04\x00\x06" + bytes(8) + b"\x08\x00" + ip),
    "linux-sll2": (276, lambda ip: b"\x08\x00\x00\x00" + bytes(16) + ip),
    "bsd-loopback": (0, lambda ip: (2).to_bytes(4, "little") + ip),
    "openbsd-loop": (108, lambda ip: (2).to_bytes(4, "big") + ip),
    "raw-ip": (101, lambda ip: ip),
    "ethernet-vlan": (1, lambda ip: bytes(12) + b"\x81\x00\x00\x05\x08\x00" + ip),
    "ipv6": (1, lambda ip: bytes(12) + b"\x86\xdd" + to_ipv6(ip)),
}


@pytest.mark.parametrize("layer", LINK_LAYERS)
def test_link_layers(
    layer: str, capsys: pytest.CaptureFixture[str], reference_dir: Path, tmp_path: Path
) -> None:
    linktype, wrap = LINK_LAYERS[layer]
    src = reference_dir / "s5_keepalive_idle.pcap"
    path = tmp_path / f"{layer}.pcap"
    write_pcap(path, linktype, [(t, wrap(ip)) for t, ip in ip_packets(src)])
    got = run_json(capsys, "pcap", "--json", str(path))
    want = run_json(capsys, "pcap", "--json", str(src))
    assert len(got) == len(want) == 47
    for g, w in zip(got, want, strict=True):
        for key in ("raw_hex", "direction", "src_port", "dst_port", "tcp_stream", "frame", "pdu"):
            assert g.get(key) == w.get(key)
    if layer == "ipv6":
        assert got[0]["src"] == "[::1]:9998"


def tcp_ip(sport: int, dport: int, seq: int, payload: bytes, flags: int = 0x18) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 2]))  # fmt: skip
    return header + tcp


def test_tcp_reassembly_out_of_order_retransmitted_and_split(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tpdu = bytes.fromhex(
        "0034ee073031800102810100a229ac2730060201170201003006020101020100300c01010001010001"
        "01000101000407a0a40000023f00"
    )
    ping = bytes.fromhex("0001fe00")
    isn = 0xFFFFFFF0  # the sequence numbers wrap around inside the stream
    stream = ping + tpdu + ping
    segments = [
        (isn, b"", 0x02),  # SYN
        (isn + 1 + 30, stream[30:], 0x18),  # arrives before the bytes in front of it
        (isn + 1, stream[:10], 0x18),
        (isn + 1, stream[:10], 0x18),  # retransmission
        (isn + 1 + 5, stream[5:30], 0x18),  # overlaps what we have
    ]
    packets = [
        (1.0 + i / 10, bytes(12) + b"\x08\x00" + tcp_ip(40000, 9999, seq & 0xFFFFFFFF, data, fl))
        for i, (seq, data, fl) in enumerate(segments)
    ]
    path = tmp_path / "reordered.pcap"
    write_pcap(path, 1, packets)
    items = run_json(capsys, "pcap", "--json", str(path))
    assert [bytes.fromhex(i["raw_hex"]) for i in items] == [ping, tpdu, ping]
    assert [i["frame"] for i in items] == [3, 5, 5]  # each frame when its last byte is in
    assert items[1]["direction"] == "client->bankd"
    assert items[0]["t_rel"] == pytest.approx(0.2)


def test_non_ipa_bytes_on_a_port_are_reported_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"  # "GE" as a length: 18245-byte frame
    packets = [(1.0, bytes(12) + b"\x08\x00" + tcp_ip(40000, 9998, 1, http))]
    packets.append((1.1, packets[0][1]))
    path = tmp_path / "http.pcap"
    write_pcap(path, 1, packets)
    code, lines = run(capsys, "pcap", str(path))
    assert code == 0
    assert len(lines) <= 1
