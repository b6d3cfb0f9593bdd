"""The brute-force guard: per (address, user), per address, bounded, on a fixed clock."""

from __future__ import annotations

import pytest

from sipreg.auth.guard import Guard, source_key

NOW = 1_000.0
OFFICE = "203.0.113.7"


def test_one_user_failing_from_an_address_bans_only_that_pair() -> None:
    guard = Guard(max_failures=3, window=60, ban_time=300)
    assert guard.failed(OFFICE, "alice", NOW) is None
    assert guard.failed(OFFICE, "alice", NOW + 1) is None
    ban = guard.failed(OFFICE, "alice", NOW + 2)
    assert ban is not None and (ban.address, ban.user, ban.failures) == (OFFICE, "alice", 3)
    assert ban.until == NOW + 302
    assert guard.banned(OFFICE, "alice", NOW + 3) == ban
    assert guard.banned(OFFICE, "bob", NOW + 3) is None  # the neighbour behind the same NAT
    assert guard.banned(OFFICE, None, NOW + 3) is None
    assert guard.banned("198.51.100.1", "alice", NOW + 3) is None  # alice from elsewhere
    assert guard.banned(OFFICE, "alice", NOW + 302) is None  # the ban expires


def test_failures_outside_the_window_do_not_add_up() -> None:
    guard = Guard(max_failures=3, window=60)
    for i in range(10):
        assert guard.failed(OFFICE, "alice", NOW + 31 * i) is None


def test_a_success_forgives_earlier_failures() -> None:
    guard = Guard(max_failures=3)
    guard.failed(OFFICE, "alice", NOW)
    guard.failed(OFFICE, "alice", NOW)
    guard.succeeded(OFFICE, "alice")
    assert guard.failed(OFFICE, "alice", NOW) is None
    assert guard.failed(OFFICE, "alice", NOW) is None


def test_failing_for_many_users_bans_the_address() -> None:
    guard = Guard(max_failures=10, max_users=3, window=60, ban_time=100)
    assert guard.failed(OFFICE, "u1", NOW) is None
    assert guard.failed(OFFICE, "u2", NOW) is None
    ban = guard.failed(OFFICE, "u3", NOW)
    assert ban is not None and (ban.user, ban.failures) == (None, 3)
    assert ban.describe() == f"{OFFICE} (every user)"
    assert guard.banned(OFFICE, None, NOW) == ban
    assert guard.banned(OFFICE, "anyone", NOW) == ban
    assert guard.banned("198.51.100.1", "u1", NOW) is None


def test_the_distinct_users_are_counted_within_the_window() -> None:
    guard = Guard(max_users=3, window=60)
    guard.failed(OFFICE, "u1", NOW)
    guard.failed(OFFICE, "u2", NOW)
    assert guard.failed(OFFICE, "u3", NOW + 61) is None  # u1 and u2 are too old


def test_memory_is_bounded_under_a_spoofed_flood() -> None:
    guard = Guard(max_failures=2, max_users=2, max_tracked=100)
    for i in range(10_000):
        guard.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", f"user{i}", NOW)
        guard.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", f"user{i}", NOW)
    assert len(guard._pairs) <= 100 and len(guard._users) <= 100 and len(guard._bans) <= 100


def test_long_user_names_are_bounded() -> None:
    guard = Guard(max_failures=2)
    name = "é" * 100_000
    guard.failed(OFFICE, name, NOW)
    assert guard.failed(OFFICE, name + "y", NOW) is not None  # the same counter
    assert guard.banned(OFFICE, name + "z", NOW) is not None


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        Guard(max_failures=0)
    with pytest.raises(ValueError):
        Guard(window=0)


def test_an_ipv6_source_counts_as_its_64() -> None:
    """One host picks addresses from its /64 at will: hopping does not escape the count."""
    guard = Guard(max_failures=3)
    for i in range(3):
        ban = guard.failed(f"2001:db8:1:2::{i + 1}", "alice", NOW)
    assert ban is not None and ban.address == "2001:db8:1:2::/64"
    assert guard.banned("2001:db8:1:2:ffff::9", "alice", NOW) is not None
    assert guard.banned("2001:db8:1:3::1", "alice", NOW) is None
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("fe80::1%eth0") == "fe80::/64"
    assert source_key("192.0.2.7") == "192.0.2.7" and source_key("not-an-ip") == "not-an-ip"
