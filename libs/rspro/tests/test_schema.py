"""The shipped parsed schema is the ASN.1 module as it stands."""

from __future__ import annotations

from pathlib import Path

import asn1tools

import rspro
from rspro._parsed_schema import PARSED


def test_parsed_schema_is_current() -> None:
    source = Path(rspro.__file__).parent / "asn" / "rspro.asn"
    assert asn1tools.parse_files(str(source)) == PARSED, "run rspro/asn/generate.py"
