"""Shared data for the rspro tests: the recordings of the original (upstream 1.0.0).

Tests that take ``rspro_record`` are run once per distinct RSPRO PDU of ``messages.jsonl``,
``tpdu_record`` once per distinct TPDU message, ``ipa_record`` once per distinct IPA frame;
``reference_messages`` is every line.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared/reference/upstream-1.0.0"


@cache
def _messages() -> list[dict[str, Any]]:
    path = REFERENCE / "messages.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _distinct(key: str, msg_types: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for record in _messages():
        if key in record and (not msg_types or record.get("msg_type") in msg_types):
            seen.setdefault(record[key], record)
    return list(seen.values())


_PARAMETERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "rspro_record": ("rspro_hex", ()),
    "tpdu_record": ("rspro_hex", ("tpduModemToCard", "tpduCardToModem")),
    "ipa_record": ("raw_hex", ()),
}


def _record_id(record: dict[str, Any]) -> str:
    name = record.get("msg_type") or record.get("ccm_msg_name")
    return f"{name}-{record['scenario']}-{record['seq']}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for fixture, (key, msg_types) in _PARAMETERS.items():
        if fixture in metafunc.fixturenames:
            records = _distinct(key, msg_types)
            if records:
                metafunc.parametrize(fixture, records, ids=[_record_id(r) for r in records])
            else:
                skip = pytest.mark.skip(reason=f"no reference recordings at {REFERENCE}")
                metafunc.parametrize(fixture, [pytest.param(None, marks=skip)])


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE / "messages.jsonl").exists():
        pytest.skip(f"no reference recordings at {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="session")
def reference_messages(reference_dir: Path) -> list[dict[str, Any]]:
    return _messages()
