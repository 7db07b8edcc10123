"""Card profiles and the in-process `SimCardDriver`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from remsim_bankd.card import Card, CardError, CardNotPresentError
from remsim_bankd.errors import ConfigError
from remsim_bankd.sim import (
    RECORDED_ATR,
    CardProfile,
    SimCardDriver,
    encode_iccid,
    encode_imsi,
    load_profile,
)

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
KEYS = {"ki": "00" * 16, "opc": "11" * 16}
CARD1_ATR = bytes.fromhex("3B9F96801FC78031A073BE21136743200718000101A4")


def tck_ok(atr: bytes) -> bool:
    """TCK (present when T≠0 is offered, here T=15): T0 … TCK XOR to 0 (ISO 7816-3 §8.2.5)."""
    x = 0
    for b in atr[1:]:
        x ^= b
    return x == 0


def test_shipped_atrs_are_valid_t0_sim_atrs() -> None:
    for atr in (RECORDED_ATR, CARD1_ATR):
        assert atr[0] == 0x3B and tck_ok(atr)  # direct convention, checksum right
        assert atr[1] & 0x0F == len(atr) - 7  # K historical bytes after TA1 TD1 TD2 TA3
        assert atr[3] & 0x0F == 0  # TD1: T=0 first


def test_shipped_profiles_hold_the_recorded_cards_files() -> None:
    card0 = load_profile(PROFILES / "card0.json")
    card1 = load_profile(PROFILES / "card1.json")
    assert card0.atr == RECORDED_ATR
    # card1 differs in a historical byte (pre-issuing data), so a remap shows in the ATR
    assert card1.atr == CARD1_ATR != card0.atr
    assert card0.ef_iccid.hex() == "98942000000000000000"
    assert card0.ef_imsi.hex() == "082926000000100000"
    assert card1.ef_iccid.hex() == "98942000000000000001"
    assert card1.ef_imsi.hex() == "082926000000100001"
    assert card0.ki != card1.ki


def test_iccid_and_imsi_encodings() -> None:
    assert encode_iccid("8949020000000000001").hex() == "989420000000000000f1"
    assert encode_imsi("001010123456789").hex() == "080910101032547698"
    assert encode_imsi("00101012345").hex() == "06091010103254ffff"  # shorter: FF-padded
    assert encode_imsi("0010101234").hex() == "060110101032f4ffff"  # even: parity nibble 1


def test_profile_json_round_trip_and_defaults(tmp_path: Path) -> None:
    profile = CardProfile.model_validate(
        {"iccid": "8949020000000000001", "imsi": "001010123456789", **KEYS}
    )
    assert profile.pin1 == "1234" and profile.pin1_enabled and profile.sqn == 0
    path = tmp_path / "p.json"
    path.write_text(profile.model_dump_json())
    assert json.loads(path.read_text())["ki"] == "00" * 16
    assert load_profile(path) == profile


def test_yaml_profile(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("iccid: '8949020000000000001'\nimsi: '001010123456789'\n"
                    f"ki: '{KEYS['ki']}'\nop: '{'22' * 16}'\n")  # fmt: skip
    profile = load_profile(path)
    assert profile.opc is None and len(profile.opc_value) == 16


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.yaml", "iccid: '1'\nimsi: x: y\n", "p.yaml: bad YAML at line 2, column 8: "
         "mapping values are not allowed here"),
        ("p.yaml", "[unclosed\n", "p.yaml: bad YAML at line 2, column 1: expected ',' or ']', "
         "but got '<stream end>'"),
        ("p.yml", "- a list\n", "p.yml: profile: Input should be a valid dictionary"),
        ("p.json", '{"iccid": }', "p.json: bad JSON at line 1, column 11: Expecting value"),
        ("p.yaml", "iccid: 8949020000000000001\nimsi: 262000000010000\nki: '00'\n",
         "p.yaml: iccid: Input should be a valid string; imsi: Input should be a valid string"),
        ("p.json", None, "p.json: No such file or directory"),
    ],
)  # fmt: skip
def test_broken_profile_files_give_one_line_config_errors(
    tmp_path: Path, name: str, text: str | None, message: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_profile(path)
    assert str(exc.value).startswith(f"cannot load profile {tmp_path}/{message}")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"ki": "00" * 15},
        {"opc": None},  # neither OPc nor OP
        {"op": "22" * 16},  # both
        {"imsi": "26200000001000x"},
        {"iccid": "123"},
        {"pin1": "12"},
        {"atr": "3b"},
        {"atr_cycle": ["3b00", "3b"]},
        {"sqn": 1 << 48},
        {"surprise": 1},
    ],
)
def test_invalid_profiles(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {"iccid": "8949020000000000001", "imsi": "001010123456789", **KEYS}
    with pytest.raises(ValidationError):
        CardProfile.model_validate({**fields, **bad})


def test_driver_implements_card() -> None:
    driver = SimCardDriver.from_file(PROFILES / "card0.json")
    assert isinstance(driver, Card)
    assert driver.atr == b""
    assert driver.connect() == RECORDED_ATR == driver.atr
    assert driver.transmit(bytes.fromhex("a0a40000023f00")) == b"\x9f\x16"
    assert driver.reset() == RECORDED_ATR
    assert driver.transmit(bytes.fromhex("a0c0000016")) == b"\x6f\x00"  # reset drops it
    driver.disconnect()
    with pytest.raises(CardError):
        driver.transmit(bytes.fromhex("a0a40000023f00"))


def test_atr_cycle_changes_the_atr_on_each_cold_reset() -> None:
    profile = load_profile(PROFILES / "card0.json").model_copy(update={"atr_cycle": (CARD1_ATR,)})
    driver = SimCardDriver(profile)
    assert driver.connect() == RECORDED_ATR  # the first power-up: `atr`
    assert driver.reset(warm=True) == RECORDED_ATR  # a warm reset keeps it
    assert driver.reset() == CARD1_ATR == driver.atr
    assert driver.reset() == RECORDED_ATR
    driver.disconnect()
    assert driver.connect() == CARD1_ATR  # a power-up is a cold reset too


def test_atr_cycle_in_a_profile_file(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    fields = {"iccid": "8949020000000000001", "imsi": "001010123456789", **KEYS}
    path.write_text(json.dumps({**fields, "atr": "3b00", "atr_cycle": ["3b0100", "3b0200"]}))
    profile = load_profile(path)
    assert profile.atr_cycle == (bytes.fromhex("3b0100"), bytes.fromhex("3b0200"))
    assert json.loads(profile.model_dump_json())["atr_cycle"] == ["3b0100", "3b0200"]
    driver = SimCardDriver(profile)
    assert [driver.connect(), driver.reset(), driver.reset(), driver.reset()] == [
        bytes.fromhex(h) for h in ("3b00", "3b0100", "3b0200", "3b00")
    ]


def test_driver_card_removal() -> None:
    driver = SimCardDriver(load_profile(PROFILES / "card0.json"))
    driver.connect()
    driver.remove()
    with pytest.raises(CardNotPresentError):
        driver.transmit(bytes.fromhex("a0a40000023f00"))
    with pytest.raises(CardNotPresentError):
        driver.connect()
    driver.insert()
    assert driver.connect() == RECORDED_ATR
    assert driver.transmit(bytes.fromhex("a0a40000023f00")) == b"\x9f\x16"
