"""The virtual SIM bank's own rules, checked without starting pcscd."""

from __future__ import annotations

import pytest

from remsim_testing.simbank import PROFILES_DIR, VirtualSimBank, default_profiles


def test_a_bank_holds_at_most_two_cards() -> None:
    with pytest.raises(ValueError, match=r"1\.\.2 cards"):
        VirtualSimBank(["a.json", "b.json", "c.json"])


def test_the_default_cards_are_the_bankd_s_example_profiles() -> None:
    assert PROFILES_DIR.parts[-3:] == ("services", "bankd", "profiles")
    assert [p.name for p in default_profiles()] == ["card0.json", "card1.json"]
    assert all(p.is_file() for p in default_profiles())
