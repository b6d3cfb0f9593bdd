"""Stateless nonces on a fixed clock, and the bounded replay table."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipreg.auth import nonce as nonce_module
from sipreg.auth.nonce import CLOCK_SKEW, VERIFIED, Freshness, NonceCounts, Nonces

KEY = b"k" * 32
NOW = 1_000_000.0
IP = "198.51.100.7"


def test_a_fresh_nonce_checks_fresh_until_its_lifetime_ends() -> None:
    nonces = Nonces(KEY, lifetime=300)
    nonce = nonces.issue(NOW, "example.com", IP)
    fresh = nonces.check(nonce, NOW, "example.com", IP)
    assert (fresh.freshness, fresh.issued_at, fresh.ours) == (Freshness.FRESH, NOW, True)
    assert nonces.check(nonce, NOW + 299.9, "example.com", IP).freshness is Freshness.FRESH
    stale = nonces.check(nonce, NOW + 300, "example.com", IP)
    assert (stale.freshness, stale.issued_at) == (Freshness.STALE, NOW)


def test_the_issue_time_is_kept_to_the_millisecond() -> None:
    nonces = Nonces(KEY)
    assert nonces.check(nonces.issue(NOW + 0.123, "r", IP), NOW + 1, "r", IP).issued_at == (
        NOW + 0.123
    )


def test_nonces_are_distinct_and_fit_a_quoted_string() -> None:
    nonces = Nonces(KEY)
    issued = {nonces.issue(NOW, "example.com", IP) for _ in range(1000)}
    assert len(issued) == 1000
    assert all(len(n) == 43 and n.isascii() and '"' not in n and "\\" not in n for n in issued)
    salt = b"123456"
    assert nonces.issue(NOW, "r", IP, salt=salt) == nonces.issue(NOW, "r", IP, salt=salt)


def _flip(nonce: str, at: int) -> str:
    return nonce[:at] + ("B" if nonce[at] == "A" else "A") + nonce[at + 1 :]


@pytest.mark.parametrize(
    "forge",
    [
        lambda n: _flip(n, 30),  # a MAC character
        lambda n: _flip(n, 42),  # the last character: two of its bits are spare
        lambda n: n[:3] + "." + n[3:],  # base64 would skip the dot
        lambda n: n[:-2],  # truncated
        lambda n: n + "AAAA",  # too long
        lambda n: n + "=",  # padded
        lambda n: "not base64 at all! not base64 at all! not b",
        lambda n: "",
        lambda n: base64.urlsafe_b64encode(b"\x00" * 32).decode().rstrip("="),
    ],
)
def test_a_forged_garbled_or_respelled_nonce_is_forged(forge: Callable[[str], str]) -> None:
    nonces = Nonces(KEY)
    for _ in range(20):  # a few nonces, so the spare bits of the last character vary
        nonce = nonces.issue(NOW, "example.com", IP)
        assert forge(nonce) != nonce
        assert nonces.check(forge(nonce), NOW, "example.com", IP).freshness is Freshness.FORGED


def test_a_nonce_is_bound_to_its_key_realm_and_client_address() -> None:
    nonce = Nonces(KEY).issue(NOW, "example.com", IP)
    assert Nonces(b"x" * 32).check(nonce, NOW, "example.com", IP).freshness is Freshness.FORGED
    assert Nonces(KEY).check(nonce, NOW, "example.org", IP).freshness is Freshness.FORGED
    other = Nonces(KEY).check(nonce, NOW, "example.com", "203.0.113.66")
    assert other.freshness is Freshness.FORGED  # a captured nonce sent from elsewhere


def test_another_process_with_the_same_key_checks_the_nonce_but_not_as_its_own() -> None:
    before_restart = Nonces(KEY).issue(NOW, "example.com", IP)
    after = Nonces(KEY).check(before_restart, NOW + 1, "example.com", IP)
    assert (after.freshness, after.ours) == (Freshness.FRESH, False)


def test_a_nonce_from_the_future_beyond_the_skew_is_stale() -> None:
    nonces = Nonces(KEY)
    nonce = nonces.issue(NOW + CLOCK_SKEW + 1, "r", IP)
    assert nonces.check(nonce, NOW, "r", IP).freshness is Freshness.STALE
    assert nonces.check(nonces.issue(NOW + 2, "r", IP), NOW, "r", IP).freshness is Freshness.FRESH


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Nonces(b"short")
    for lifetime in (0, float("inf")):
        with pytest.raises(ValueError, match="positive and finite"):
            Nonces(KEY, lifetime=lifetime)
    with pytest.raises(ValueError, match="6 bytes"):
        Nonces(KEY).issue(NOW, "r", IP, salt=b"x")
    with pytest.raises(ValueError, match="4 bytes"):
        Nonces(KEY, epoch=b"x")


@given(st.text(max_size=60))
def test_any_text_is_forged(text: str) -> None:
    assert Nonces(KEY).check(text, NOW, "r", IP).freshness is Freshness.FORGED


# --- nc replay tracking -------------------------------------------------------------------


def test_an_nc_must_increase_per_nonce() -> None:
    counts = NonceCounts()
    assert counts.use("n1", NOW, 1)
    assert not counts.use("n1", NOW, 1)  # the same header replayed
    assert counts.use("n1", NOW, 2)
    assert counts.use("n1", NOW, 5)  # a client may skip counts
    assert not counts.use("n1", NOW, 4)
    assert counts.use("n2", NOW, 1)  # another nonce counts on its own


def test_the_table_is_bounded_and_forgets_safely() -> None:
    counts = NonceCounts(max_entries=3)
    for i in range(3):
        assert counts.use(f"n{i}", NOW + i, 1)
    assert counts.use("n3", NOW + 3, 1)  # n0, used longest ago, is dropped
    assert len(counts) == 3
    assert counts.horizon == NOW
    assert not counts.use("n0", NOW, 2)  # its count is unknown now: refused, never replayable
    assert not counts.use("old", NOW - 1, 1)  # issued before the horizon: refused too
    assert counts.use("n1", NOW + 1, 2)  # still tracked
    assert counts.use("later", NOW + 10, 1)


def test_sweep_forgets_stale_nonces_and_moves_the_horizon() -> None:
    counts = NonceCounts()
    counts.use("old", NOW, 1)
    counts.use("new", NOW + 100, 1)
    counts.sweep(NOW + 50)
    assert len(counts) == 1 and counts.horizon == NOW
    assert not counts.use("old", NOW, 2)  # a stepped-back clock cannot revive it
    assert not counts.use("new", NOW + 100, 1)


@given(st.lists(st.tuples(st.integers(0, 9), st.integers(1, 20)), max_size=200))
def test_no_nc_is_ever_accepted_twice_for_one_nonce(uses: list[tuple[int, int]]) -> None:
    counts = NonceCounts(max_entries=4)
    accepted: set[tuple[int, int]] = set()
    for nonce, nc in uses:
        if counts.use(f"n{nonce}", NOW + nonce, nc):
            assert all(not (n == nonce and c >= nc) for n, c in accepted), (nonce, nc)
            accepted.add((nonce, nc))
        assert len(counts) <= 4


class CountedNonces(Nonces):
    """Nonces that count how often a MAC is worked out."""

    def __init__(self, key: bytes, lifetime: float) -> None:
        super().__init__(key, lifetime=lifetime)
        self.macs = 0

    def _mac(self, head: bytes, realm: str, address: str) -> bytes:
        self.macs += 1
        return super()._mac(head, realm, address)


def test_a_genuine_nonce_is_checked_once_and_judged_at_every_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The MAC of a nonce found genuine is not checked again; its age still is, each time."""
    nonces = CountedNonces(KEY, lifetime=60)
    nonce = nonces.issue(NOW, "r", "192.0.2.1")
    nonces.macs = 0
    for later in (0, 10, 59):
        assert nonces.check(nonce, NOW + later, "r", "192.0.2.1").freshness is Freshness.FRESH
    assert nonces.macs == 1
    assert nonces.check(nonce, NOW + 60, "r", "192.0.2.1").freshness is Freshness.STALE
    # Remembered for its realm and address only: elsewhere it is checked, and forged.
    assert nonces.check(nonce, NOW, "r", "192.0.2.2").freshness is Freshness.FORGED
    assert nonces.check(nonce, NOW, "other", "192.0.2.1").freshness is Freshness.FORGED
    assert nonces.macs == 3
    forged = nonce[:-1] + ("A" if nonce[-1] != "A" else "B")
    for _ in range(2):  # a forged nonce is never remembered
        assert nonces.check(forged, NOW, "r", "192.0.2.1").freshness is Freshness.FORGED
    assert NonceCounts().max_entries == VERIFIED  # as many as the counts follow
    monkeypatch.setattr(nonce_module, "VERIFIED", 64)
    for n in range(64 + 10):  # and the memory is bounded
        nonces.check(nonces.issue(NOW, "r", f"10.0.{n // 256}.{n % 256}"), NOW, "r", "x")
        nonces.check(nonces.issue(NOW, "r", "y"), NOW, "r", "y")
    assert len(nonces._verified) == 64
