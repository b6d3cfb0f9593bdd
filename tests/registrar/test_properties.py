"""Hypothesis properties of the registrar.

1. After any sequence of REGISTERs (contacts from a small pool, some equal by
   RFC 3261 19.1.4, random expiries, clock jumps, several Call-IDs), the store
   holds exactly what a plain dict model of section 10.3 says, every 200 lists
   exactly the model's live bindings, and no binding outlives ``max_expires``.
2. A REGISTER (or other request) built from random header values gets an
   answer or is dropped; receive() never raises and never answers 500.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sipreg.registrar.facade import Registrar
from sipreg.uri import parse_uri

from .helpers import ALICE, CLIENT, Clock, FakeLeg, listed, make_registrar, register

MIN, MAX, DEFAULT = 30, 300, 120

# Each class holds spellings of one contact that are equal by 19.1.4; classes differ.
POOL: list[list[str]] = [
    ["sip:a@192.0.2.1:5060", "sip:a@192.0.2.1:5060;foo=1", "SIP:%61@192.0.2.1:5060"],
    ["sip:a@192.0.2.2"],
    ["sip:a@HOST.example.net;transport=tcp", "sip:a@host.example.NET;Transport=TCP"],
    ["sips:a@192.0.2.1:5060"],
]
CALL_IDS = ["phone-1@client", "phone-2@client", "phone-3@client"]
EXPIRIES = st.sampled_from([0, 0, 10, 29, 30, 31, 100, 250, 300, 301, 3600, 2**32 - 1])


@dataclass(frozen=True)
class Register:
    call: int
    contacts: tuple[tuple[int, int, int | None], ...]  # (class, spelling, expires param)
    header: int | None
    star: bool
    stale: bool


@dataclass(frozen=True)
class Advance:
    seconds: int


@dataclass(frozen=True)
class Sweep:
    pass


Step = Register | Advance | Sweep

contact_choice = st.tuples(
    st.integers(0, len(POOL) - 1), st.integers(0, 2), st.none() | EXPIRIES
).map(lambda t: (t[0], t[1] % len(POOL[t[0]]), t[2]))

registers = st.builds(
    Register,
    call=st.integers(0, len(CALL_IDS) - 1),
    contacts=st.lists(contact_choice, max_size=4).map(tuple),
    header=st.none() | EXPIRIES,
    star=st.sampled_from([False] * 6 + [True]),
    stale=st.booleans(),
).map(lambda r: Register(r.call, (), r.header, True, r.stale) if r.star else r)

steps = st.lists(
    st.one_of(registers, st.builds(Advance, st.integers(0, 400)), st.just(Sweep())),
    max_size=25,
)


@dataclass
class Entry:
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    lifetime: int


class Model:
    """Section 10.3 as a dict from contact class to binding."""

    def __init__(self) -> None:
        self.bindings: dict[int, Entry] = {}

    def live(self, now: float) -> dict[int, Entry]:
        return {k: e for k, e in self.bindings.items() if e.expires_at > now}

    def register(self, step: Register, cseq: int, now: float) -> int:
        """Apply ``step``; the status the registrar must answer."""
        call_id = CALL_IDS[step.call]
        live = self.live(now)

        def stale(entry: Entry) -> bool:
            return entry.call_id == call_id and cseq <= entry.cseq

        if step.star:
            if step.header != 0:
                return 400
            if any(stale(e) for e in live.values()):
                return 400
            self.bindings = {}
            return 200
        wanted: dict[int, tuple[str, int]] = {}
        for cls, spelling, param in step.contacts:
            expires = param if param is not None else step.header
            expires = DEFAULT if expires is None else expires
            if 0 < expires < MIN:
                return 423
            if cls in wanted:  # a contact listed twice fails the request (step 7)
                return 400
            wanted[cls] = (str(parse_uri(POOL[cls][spelling])), expires)
        if self.applied(wanted, live, call_id, cseq):
            return 200  # a replay of what this CSeq stored: nothing changes
        if any(cls in live and stale(live[cls]) for cls in wanted):
            return 400
        self.bindings = dict(live)
        for cls, (contact, expires) in wanted.items():
            if expires == 0:
                self.bindings.pop(cls, None)
            else:
                lifetime = min(expires, MAX)
                self.bindings[cls] = Entry(contact, now + lifetime, call_id, cseq, lifetime)
        return 200

    @staticmethod
    def applied(
        wanted: dict[int, tuple[str, int]], live: dict[int, Entry], call_id: str, cseq: int
    ) -> bool:
        """This Call-ID and CSeq stored exactly these contacts and expiries already."""

        def this(cls: int) -> bool:
            return cls in live and (live[cls].call_id, live[cls].cseq) == (call_id, cseq)

        if not any(this(cls) for cls in wanted):
            return False
        return all(
            cls not in live
            if expires == 0
            else this(cls) and live[cls].lifetime == min(expires, MAX)
            for cls, (_, expires) in wanted.items()
        )


def contact_header(cls: int, spelling: int, param: int | None) -> str:
    text = f"<{POOL[cls][spelling]}>"
    return text if param is None else f"{text};expires={param}"


async def run(script: list[Step]) -> None:
    clock = Clock()
    reg = make_registrar(clock, min_expires=MIN, max_expires=MAX, default_expires=DEFAULT)
    leg = FakeLeg()
    model = Model()
    counters = [0] * len(CALL_IDS)
    for step in script:
        if isinstance(step, Advance):
            clock.advance(step.seconds)
        elif isinstance(step, Sweep):
            await reg.expire()
        else:
            if step.stale and counters[step.call] > 0:
                cseq = counters[step.call]  # not higher than the last one sent
            else:
                counters[step.call] += 1
                cseq = counters[step.call]
            contacts = ["*"] if step.star else [contact_header(*c) for c in step.contacts]
            data = register(*contacts, expires=step.header, call_id=CALL_IDS[step.call], cseq=cseq)
            expected = model.register(step, cseq, clock.now)
            status = await reg.receive(data, leg, CLIENT)
            assert status == expected, (step, cseq)
            event(f"status {status}")
            if status == 200:
                live = model.live(clock.now)
                assert listed(leg.last()) == {
                    e.contact: int(e.expires_at - clock.now) for e in live.values()
                }
        await check(reg, model, clock.now)


async def check(reg: Registrar, model: Model, now: float) -> None:
    stored = await reg.bindings(ALICE)
    assert {(b.contact, b.expires_at, b.call_id, b.cseq) for b in stored} == {
        (e.contact, e.expires_at, e.call_id, e.cseq) for e in model.live(now).values()
    }
    assert len(stored) == len(model.live(now))
    state = await reg.store.load(ALICE)
    for b in state.bindings:
        assert b.expires_at - b.registered_at <= MAX
    assert set(await reg.query(ALICE)) == {
        e.contact for e in model.live(now).values() if e.contact.lower().startswith("sip")
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_store_matches_the_model(script: list[Step]) -> None:
    asyncio.run(run(script))


# --- random header values -------------------------------------------------------------------

NOISE = st.text(
    alphabet=st.sampled_from(list(" \t!\"#$%&'()*+,-./0123456789:;<=>?@AZaz[\\]^_`{|}~é\x00")),
    max_size=24,
)
VALID = {
    "Via": ["SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK-h;rport", "SIP/2.0/TCP [2001:db8::1]"],
    "To": ["<sip:alice@example.com>", "sip:alice@EXAMPLE.com;tag=x", "tel:+1555"],
    "From": ["<sip:alice@example.com>;tag=1", '"A" <sip:a@example.org>'],
    "Call-ID": ["abc@host", "x"],
    "CSeq": ["1 REGISTER", "2147483647 REGISTER"],
    "Contact": [
        "*",
        "<sip:a@192.0.2.1>;expires=60",
        "<sip:a@h>;q=0.5, <sip:b@h>",
        "sip:a@h;x",
        "<sip:c@h>;expires=9",
    ],
    "Expires": ["0", "5", "60", "4294967296"],
    "Require": ["path", "foo, path"],
    "Max-Forwards": ["70", "0"],
    "Supported": ["path"],
    "Path": ["<sip:p;lr>"],
}


OPTIONAL = {"Contact", "Expires", "Require", "Max-Forwards", "Supported", "Path"}


def broken(name: str) -> st.SearchStrategy[str | None]:
    """A value of ``name`` that is likely wrong: missing, noise, or valid with noise."""
    valid = st.sampled_from(VALID[name])
    return st.one_of(
        st.none(),
        st.just(""),
        NOISE,
        st.tuples(valid, NOISE).map("".join),
        st.tuples(NOISE, valid).map("".join),
        st.just("9 BYE" if name == "CSeq" else "x"),
    )


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A request whose header fields are mostly valid, with a few broken at random."""
    method = draw(st.sampled_from(["REGISTER"] * 4 + ["INVITE", "OPTIONS", "ACK", "CANCEL", "X"]))
    pick = draw(st.integers(0, 9))
    if pick < 7:
        ruri = draw(st.sampled_from(["sip:example.com", "sip:alice@example.com", "sip:192.0.2.1"]))
    elif pick < 9:
        ruri = draw(st.sampled_from(["tel:1", "sip:example.org", "sip:a@b@c", "x:y"]))
    else:
        ruri = "sip:" + draw(NOISE.filter(lambda t: " " not in t))
    spoiled = draw(st.sets(st.sampled_from(sorted(VALID)), max_size=3))
    lines = [f"{method} {ruri} SIP/2.0"]
    for name in VALID:
        count = draw(st.integers(1, 2)) if name in ("Contact", "Via") else 1
        for _ in range(count):
            if name in spoiled:
                v = draw(broken(name))
            elif name in OPTIONAL:
                v = draw(st.none() | st.sampled_from(VALID[name]))
            else:
                v = draw(st.sampled_from(VALID[name]))
            if name == "CSeq" and v is not None and name not in spoiled:
                v = v.replace("REGISTER", method)
            if v is not None:
                lines.append(f"{name}: {v}")
    lines = [lines[0], *draw(st.permutations(lines[1:]))]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


async def answer(data: bytes, mode: str) -> None:
    for transport in ("udp", "tcp"):
        reg = make_registrar(Clock(), mode=mode)
        leg = FakeLeg(transport=transport)
        status = await reg.receive(data, leg, ("203.0.113.1", 5060))
        assert status is None or isinstance(status, int)
        assert status != 500
        if status is None:
            assert leg.sent == []
        else:
            [(sent, _)] = leg.sent
            assert sent.startswith(f"SIP/2.0 {status} ".encode())


@settings(max_examples=400, deadline=None)
@given(requests(), st.sampled_from(["chain", "redirect"]))
def test_random_header_values_never_raise(data: bytes, mode: str) -> None:
    logger = logging.getLogger("sipreg")
    errors: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                errors.append(record)

    handler = Catch()
    logger.addHandler(handler)
    try:
        asyncio.run(answer(data, mode))
    finally:
        logger.removeHandler(handler)
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize("mode", ["chain", "redirect"])
def test_a_valid_register_from_the_generator_is_accepted(mode: str) -> None:
    data = (
        "REGISTER sip:example.com SIP/2.0\r\n"
        f"Via: {VALID['Via'][0]}\r\nTo: {VALID['To'][0]}\r\nFrom: {VALID['From'][0]}\r\n"
        f"Call-ID: abc@host\r\nCSeq: 1 REGISTER\r\nContact: {VALID['Contact'][1]}\r\n\r\n"
    ).encode()
    asyncio.run(answer(data, mode))
