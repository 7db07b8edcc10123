"""Card profiles and the in-process `SimCardDriver`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from remsim_bankd.card import Card, CardError, CardNotPresentError
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


def test_shipped_profiles_hold_the_recorded_cards_files() -> None:
    card0 = load_profile(PROFILES / "card0.json")
    card1 = load_profile(PROFILES / "card1.json")
    assert card0.atr == card1.atr == RECORDED_ATR
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
    pytest.importorskip("yaml")
    path = tmp_path / "p.yaml"
    path.write_text("iccid: '8949020000000000001'\nimsi: '001010123456789'\n"
                    f"ki: '{KEYS['ki']}'\nop: '{'22' * 16}'\n")  # fmt: skip
    profile = load_profile(path)
    assert profile.opc is None and len(profile.opc_value) == 16


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
