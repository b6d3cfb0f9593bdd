"""Allow-lists of networks, and the memory of what was asked."""

from __future__ import annotations

from sipreg.networks import LOOPBACK, MEMO, Networks, format_endpoint


def test_membership() -> None:
    nets = Networks([*LOOPBACK, "198.51.100.0/24", "2001:db8::1"])
    for inside in ("127.0.0.1", "127.9.9.9", "::1", "198.51.100.200", "2001:db8::1"):
        assert inside in nets
        assert inside in nets  # asked again: remembered
    for outside in ("192.0.2.1", "2001:db8::2", "not an address", ""):
        assert outside not in nets
    assert "::ffff:127.0.0.1" in nets  # an IPv4-mapped address is its IPv4 one
    assert "fe80::1%eth0" not in nets and "::1%lo" in nets  # a scope is no part of it
    assert 5 not in nets and not Networks([]) and "127.0.0.1" not in Networks([])


def test_a_flood_of_sources_only_makes_it_forget() -> None:
    nets = Networks(["10.0.0.0/8"])
    for i in range(3 * MEMO):
        assert f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" in nets
        assert f"192.0.{i >> 8 & 255}.{i & 255}" not in nets
    assert len(nets._seen) <= MEMO


def test_an_endpoint_brackets_ipv6() -> None:
    assert format_endpoint("192.0.2.7", 5060) == "192.0.2.7:5060"
    assert format_endpoint("::1", 5060) == "[::1]:5060"
    assert format_endpoint("example.com", 5061) == "example.com:5061"
