"""Hypothesis strategies shared by the fuzz tests: torture mutations and SIP-shaped messages."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from hypothesis import strategies as st

DATA: Final = Path(__file__).parent.parent / "data" / "rfc4475"
TORTURE: Final = {p.stem: p.read_bytes() for p in sorted(DATA.glob("*.dat"))}

# Bytes that matter to the grammar, so mutations land on structure, not only on noise.
_INSERTS: Final = [
    *(b"\r\n", b"\r\n ", b"\n", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\"),
    *(b"%", b"%0", b"@", b"[", b"]", b"=", b"/", b"\x00", b"\xff", b"9" * 12),
]


@st.composite
def mutated_torture(draw: st.DrawFn) -> bytes:
    """A torture message with a few byte flips, truncations, insertions and deletions."""
    data = bytearray(TORTURE[draw(st.sampled_from(sorted(TORTURE)))])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(_INSERTS) | st.binary(min_size=1, max_size=6))
        else:
            del data[at : at + draw(st.integers(1, 12))]
    return bytes(data)


_SIPISH: Final = "sipSIPtelTCPUDP:/2.0 <>@;=,\"\\\t%[]0123456789abcxyz.-_*!~'()?&+$#é"
sip_text: Final = st.text(alphabet=_SIPISH, max_size=40)

_NAMES: Final = [
    *("Via", "v", "To", "t", "From", "f", "Call-ID", "i", "CSeq", "Max-Forwards"),
    *("Contact", "m", "Content-Length", "l", "Expires", "Require", "X-Other"),
]
_VALUES: Final = [
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
    "SIP / 2.0 / TCP [2001:db8::1]:5060;rport;received=192.0.2.2",
    "<sip:a@example.com>;tag=1",
    '"A, B" <sip:b@example.com>',
    "sip:c@example.com;expires=60",
    "*",
    "1 REGISTER",
    "70",
    "0",
    "id@host",
]
_STARTS: Final = [
    "REGISTER sip:example.com SIP/2.0",
    "OPTIONS sip:a@b SIP/2.0",
    "INVITE tel:+1234 SIP/2.0",
    "SIP/2.0 200 OK",
    "SIP/2.0 100 ",
]


@st.composite
def sip_messages(draw: st.DrawFn) -> bytes:
    """Messages built from SIP-shaped pieces: they get past the start line far more often."""
    start = draw(st.sampled_from(_STARTS) | sip_text)
    fields = draw(
        st.lists(
            st.tuples(st.sampled_from(_NAMES), st.sampled_from(_VALUES) | sip_text),
            max_size=12,
        )
    )
    eol = draw(st.sampled_from(["\r\n", "\n"]))
    head = eol.join([start, *(f"{name}: {value}" for name, value in fields)])
    body = draw(st.binary(max_size=16))
    return (head + eol + eol).encode("utf-8", "surrogateescape") + body


any_message: Final = st.one_of(st.binary(max_size=600), mutated_torture(), sip_messages())
