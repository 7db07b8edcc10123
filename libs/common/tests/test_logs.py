"""Logging as the original's options describe it, in one layout per format."""

from __future__ import annotations

import datetime
import io
import json
import logging

import pytest

from remsim_common.logs import NOTICE, OFF, parse_level, parse_mask, setup_logging

CATEGORIES = {"DMAIN": ("remsim.main",), "DRSPRO": ("rspro", "remsim.link")}


@pytest.mark.parametrize(
    ("given", "level"),
    [
        ("DEBUG", logging.DEBUG),
        ("info", logging.INFO),
        ("NOTICE", NOTICE),
        ("warning", logging.WARNING),
        ("ERROR", logging.ERROR),
        ("FATAL", logging.CRITICAL),
        ("0", logging.DEBUG),
        ("1", logging.DEBUG),
        ("2", logging.INFO),  # libosmocore: between two levels means the next one up
        ("3", logging.INFO),
        (3, logging.INFO),
        ("4", NOTICE),
        ("5", NOTICE),
        ("7", logging.ERROR),
        ("8", logging.CRITICAL),
    ],
)
def test_levels_by_name_and_libosmocore_number(given: str | int, level: int) -> None:
    assert parse_level(given) == level


@pytest.mark.parametrize("bad", ["9", "LOUD", "", "-1"])
def test_bad_levels_say_what_is_allowed(bad: str) -> None:
    with pytest.raises(ValueError, match=r"DEBUG|0\.\.8"):
        parse_level(bad)


def test_mask_items_with_and_without_level() -> None:
    assert parse_mask("DMAIN,1:drspro:DST2,5") == {
        "DMAIN": logging.DEBUG,
        "DRSPRO": logging.DEBUG,
        "DST2": NOTICE,
    }


def _log(**kwargs: object) -> str:
    stream = io.StringIO()
    setup_logging(categories=CATEGORIES, stream=stream, **kwargs)  # type: ignore[arg-type]
    logging.getLogger("remsim.main").debug("main debug")
    logging.getLogger("remsim.main").info("main info")
    logging.getLogger("rspro").debug("rspro debug")
    logging.getLogger("rspro").log(NOTICE, "rspro notice")
    logging.getLogger("remsim.link").error("link error")
    return stream.getvalue()


def test_default_is_info_everywhere() -> None:
    out = _log()
    assert "main info" in out and "rspro notice" in out and "link error" in out
    assert "debug" not in out


def test_mask_switches_off_unlisted_categories_and_sets_listed_levels() -> None:
    out = _log(mask="DMAIN,1")
    assert "main debug" in out and "main info" in out
    assert "rspro" not in out and "link error" not in out


def test_mask_level_in_between_means_the_next_level_up() -> None:
    out = _log(mask="DMAIN,4:DRSPRO,4")
    assert "main info" not in out
    assert "rspro notice" in out and "link error" in out


def test_global_level_is_a_floor_over_the_mask() -> None:
    out = _log(mask="DMAIN,1:DRSPRO,1", level=logging.ERROR)
    assert out.count("\n") == 1 and "link error" in out


def test_a_later_setup_without_mask_switches_categories_back_on() -> None:
    _log(mask="DMAIN")
    assert logging.getLogger("rspro").level == OFF
    assert "rspro notice" in _log()


def test_unknown_categories_are_ignored_with_a_warning() -> None:
    out = _log(mask="DLINP,1:DMAIN")
    assert "DLINP" in out and "main debug" in out


def test_json_lines_have_the_one_layout_with_structured_fields() -> None:
    stream = io.StringIO()
    setup_logging(log_format="json", stream=stream)
    log = logging.getLogger("remsim.bankd")
    log.info("client connected", extra={"bank": 1, "slot": 0, "client": 23})
    try:
        raise RuntimeError("card gone")
    except RuntimeError:
        log.exception("card failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert list(first) == ["time", "level", "logger", "message", "bank", "slot", "client"]
    assert first["level"] == "INFO" and first["logger"] == "remsim.bankd"
    assert first["message"] == "client connected"
    moment = datetime.datetime.fromisoformat(first["time"])
    assert moment.utcoffset() == datetime.timedelta(0)
    assert "RuntimeError: card gone" in second["exception"]
    assert {"time", "level", "logger", "message"} <= set(second)


def test_text_lines_show_structured_fields_after_the_message() -> None:
    stream = io.StringIO()
    setup_logging(stream=stream)
    logging.getLogger("remsim.bankd").warning("map refused", extra={"bank": 1, "slot": 7})
    line = stream.getvalue().strip()
    assert line.endswith("WARNING remsim.bankd: map refused bank=1 slot=7")
    datetime.datetime.fromisoformat(line.split(" ")[0])
