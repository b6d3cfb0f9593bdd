"""The Authorize step in front of the registrar: RFC 3261 10.3 steps 3-4, on a fixed clock."""

from __future__ import annotations

import logging
from typing import Any, Literal

import pytest

from registrar.helpers import ALICE, BOB, CLIENT, SERVER_IP, Clock, FakeLeg, build, register
from sipreg.auth.digest import parse_credentials
from sipreg.auth.policy import AuthPolicy
from sipreg.auth.step import Authorize
from sipreg.auth.users import User, Users
from sipreg.message import Response
from sipreg.registrar.facade import Registrar
from sipreg.registrar.policy import Policy

from .helpers import challenges, credentials

C1 = "sip:alice@198.51.100.7:5062"
KEY = b"n" * 32
REALM = "example.com"


class CountingUsers(Users):
    """Users that count their look-ups (a look-up is where digest work starts)."""

    lookups = 0

    def lookup(self, name: str, realm: str) -> User | None:
        self.lookups += 1
        return super().lookup(name, realm)


def users() -> CountingUsers:
    return CountingUsers(
        [User.with_password("alice", REALM, "wonderland"), User.with_password("bob", REALM, "b0b")]
    )


class Setup:
    """A redirect-mode registrar with Authorize in front, a clock and a leg."""

    def __init__(self, mode: Literal["chain", "redirect"] = "redirect", **auth: Any) -> None:
        self.clock = Clock()
        self.leg = FakeLeg()
        self.users = users()
        policy = Policy(domains=("example.com",), identities=(SERVER_IP,))
        self.step = Authorize(AuthPolicy(realm=REALM, **auth), policy, self.users, KEY)
        self.registrar = Registrar(
            policy=policy,
            authorize=self.step,
            mode=mode,
            clock=self.clock,
            timer_clock=self.clock,
        )

    async def send(self, data: bytes, source: tuple[str, int] = CLIENT) -> Response:
        status = await self.registrar.receive(data, self.leg, source)
        response: Response = self.leg.last()
        assert response.status == status
        return response

    async def login(
        self, user: str = "alice", password: str = "wonderland", *, cseq: int = 1, **kw: Any
    ) -> tuple[Response, Response]:
        """REGISTER, get challenged, answer: (the 401, the final answer)."""
        aor = kw.pop("aor", f"sip:{user}@example.com")
        contact = kw.pop("contact", C1)
        algorithm = kw.pop("algorithm", "SHA-256")
        source = kw.pop("source", CLIENT)
        challenge = await self.send(register(contact, aor=aor, cseq=cseq, **kw), source)
        value = credentials(challenge, user, password, algorithm=algorithm)
        final = await self.send(
            register(contact, aor=aor, cseq=cseq + 1, extra=[("Authorization", value)], **kw),
            source,
        )
        return challenge, final


@pytest.fixture
def setup() -> Setup:
    return Setup()


async def test_no_credentials_get_a_401_with_sha256_first(setup: Setup) -> None:
    answer = await setup.send(register(C1))
    assert answer.reason == "Unauthorized"
    offers = challenges(answer)
    assert [c["algorithm"] for c in offers] == ["SHA-256", "MD5"]
    assert all(c["realm"] == REALM and c["qop"] == "auth" and "stale" not in c for c in offers)
    assert offers[0]["nonce"] == offers[1]["nonce"]
    assert await setup.registrar.query(ALICE) == []


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
async def test_the_right_password_binds(setup: Setup, algorithm: str) -> None:
    _, final = await setup.login(algorithm=algorithm)
    assert final.status == 200
    assert await setup.registrar.query(ALICE) == [C1]


async def test_a_wrong_password_binds_nothing(setup: Setup) -> None:
    _, final = await setup.login(password="guess")
    assert final.status == 401
    assert all("stale" not in c for c in challenges(final))
    assert await setup.registrar.query(ALICE) == []


def shape(answer: Response) -> list[tuple[str, str]]:
    """A response's header fields with the per-challenge values (nonce, tag, Via) blanked."""
    out = []
    for name, value in answer.headers:
        if name == "WWW-Authenticate":
            params = dict(parse_credentials(value).params)
            params["nonce"] = "*"
            value = str(sorted(params.items()))
        elif name in ("To", "Via", "Call-ID", "From"):
            value = "*"
        out.append((name, value))
    return out


async def test_an_unknown_user_gets_what_a_wrong_password_gets(setup: Setup) -> None:
    _, wrong = await setup.login(password="guess")
    _, unknown = await setup.login("mallory", "guess", call_id="other")
    assert (unknown.status, unknown.reason) == (wrong.status, wrong.reason)
    assert shape(unknown) == shape(wrong)
    assert setup.users.lookups == 2  # both were checked against a digest


async def test_a_replayed_authorization_binds_nothing(setup: Setup) -> None:
    challenge = await setup.send(register(C1))
    value = credentials(challenge, "alice", "wonderland")
    first = await setup.send(register(C1, cseq=2, extra=[("Authorization", value)]))
    assert first.status == 200
    # The same header, captured, sent again on a new transaction to bind another contact.
    replay = await setup.send(
        register("sip:mallory@203.0.113.66", cseq=3, extra=[("Authorization", value)])
    )
    assert replay.status == 401
    assert all(c.get("stale") == "true" for c in challenges(replay))  # a client just retries
    assert await setup.registrar.query(ALICE) == [C1]
    # The owner goes on with the same nonce and a higher nc.
    nc2 = credentials(challenge, "alice", "wonderland", nc=2, cnonce="c2")
    assert (await setup.send(register(C1, cseq=4, extra=[("Authorization", nc2)]))).status == 200


async def test_a_stale_nonce_with_the_right_digest_gets_stale_true(setup: Setup) -> None:
    challenge = await setup.send(register(C1))
    setup.clock.advance(301)  # past the 300 s lifetime
    value = credentials(challenge, "alice", "wonderland")
    stale = await setup.send(register(C1, cseq=2, extra=[("Authorization", value)]))
    assert stale.status == 401
    assert [c.get("stale") for c in challenges(stale)] == ["true", "true"]
    wrong = credentials(challenge, "alice", "guess")
    failed = await setup.send(register(C1, cseq=3, extra=[("Authorization", wrong)]))
    assert [c.get("stale") for c in challenges(failed)] == [None, None]  # no hint for a guess
    value = credentials(stale, "alice", "wonderland")
    assert (await setup.send(register(C1, cseq=4, extra=[("Authorization", value)]))).status == 200


async def test_a_forged_nonce_is_a_plain_failure(setup: Setup) -> None:
    challenge = await setup.send(register(C1))
    forged = credentials(
        challenge, "alice", "wonderland", nonce="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    )
    answer = await setup.send(register(C1, cseq=2, extra=[("Authorization", forged)]))
    assert answer.status == 401 and all("stale" not in c for c in challenges(answer))
    assert await setup.registrar.query(ALICE) == []


async def test_no_qop_is_accepted_once_per_nonce(setup: Setup) -> None:
    challenge = await setup.send(register(C1))
    value = credentials(challenge, "alice", "wonderland", qop=False)
    assert (await setup.send(register(C1, cseq=2, extra=[("Authorization", value)]))).status == 200
    again = await setup.send(register(C1, cseq=3, extra=[("Authorization", value)]))
    assert again.status == 401


async def test_no_qop_can_be_refused() -> None:
    setup = Setup(allow_no_qop=False)
    challenge = await setup.send(register(C1))
    value = credentials(challenge, "alice", "wonderland", qop=False)
    assert (await setup.send(register(C1, cseq=2, extra=[("Authorization", value)]))).status == 401
    assert await setup.registrar.query(ALICE) == []


@pytest.mark.parametrize(
    "value",
    [
        "NoOneKnowsThisScheme opaque-data=here",  # RFC 4475 3.3.7 (regaut01)
        'Digest username="alice", username="bob", realm="example.com"',  # duplicated
        'Digest username="alice", realm="example.com", uri="sip:example.com"',  # no response
        "Digest garbage",
        'Digest username="alice", realm="example.com", nonce="x", uri="sip:example.com",'
        ' response="00000000000000000000000000000000", algorithm=SHA-512-256',
        'Digest username="alice", realm="example.com", nonce="x", uri="sip:example.com",'
        ' response="00000000000000000000000000000000", qop=auth-int, nc=00000001, cnonce="c"',
    ],
)
async def test_unusable_credentials_get_a_fresh_challenge(setup: Setup, value: str) -> None:
    answer = await setup.send(register(C1, extra=[("Authorization", value)]))
    assert answer.status == 401
    assert len(challenges(answer)) == 2


async def test_the_credentials_uri_must_be_the_request_uri(setup: Setup) -> None:
    challenge = await setup.send(register(C1))
    value = credentials(challenge, "alice", "wonderland", uri="sip:other.example.com")
    answer = await setup.send(register(C1, cseq=2, extra=[("Authorization", value)]))
    assert answer.status == 400
    # A Request-URI in <> (Net::SIP) is signed as sent and compared without the brackets.
    bracketed = credentials(challenge, "alice", "wonderland", uri="<sip:example.com;transport=udp>")
    data = register(
        C1, ruri="<sip:example.com;transport=udp>", cseq=3, extra=[("Authorization", bracketed)]
    )
    assert (await setup.send(data)).status == 200


async def test_another_users_aor_is_403(setup: Setup) -> None:
    _, final = await setup.login("alice", "wonderland", aor=BOB)
    assert final.status == 403
    assert await setup.registrar.query(BOB) == []


async def test_a_grant_lets_a_user_bind_another_aor() -> None:
    setup = Setup(grants={"alice": ["sip:sales@example.com"]})
    _, final = await setup.login("alice", "wonderland", aor="sip:sales@EXAMPLE.com")
    assert final.status == 200
    assert await setup.registrar.query("sip:sales@example.com") == [C1]
    _, other = await setup.login("alice", "wonderland", aor=BOB, call_id="x")
    assert other.status == 403


async def test_contact_star_without_credentials_removes_nothing(setup: Setup) -> None:
    _, final = await setup.login()
    assert final.status == 200
    star = await setup.send(register("*", expires=0, cseq=10))
    assert star.status == 401
    assert await setup.registrar.query(ALICE) == [C1]


async def test_refusals_of_steps_1_and_2_come_before_the_challenge(setup: Setup) -> None:
    unknown = register(C1, extra=[("Require", "frobnicate")])
    assert (await setup.send(unknown)).status == 420
    assert (await setup.send(register(C1, ruri="sip:example.org"))).status == 403
    assert (await setup.send(register(C1, ruri="tel:+15551234"))).status == 416


async def test_chain_mode_passes_a_foreign_register_on_unauthenticated() -> None:
    setup = Setup(mode="chain")
    assert (
        await setup.registrar.receive(register(C1, ruri="sip:example.org"), setup.leg, CLIENT)
        is None
    )
    assert setup.leg.sent == []
    assert (await setup.send(register(C1))).status == 401


async def test_other_methods_are_not_challenged_by_default(setup: Setup) -> None:
    assert (await setup.send(build("OPTIONS", f"sip:{SERVER_IP}"))).status == 200


async def test_a_user_failing_again_and_again_is_banned_then_let_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    setup = Setup(max_failures=3, ban_time=100)
    with caplog.at_level(logging.WARNING, logger="sipreg.auth"):
        for i in range(3):
            _, final = await setup.login(password="guess", cseq=10 * i)
            assert final.status == 401
        _, banned = await setup.login(cseq=100)  # the right password, but banned
        assert banned.status == 403
        lookups = setup.users.lookups
        await setup.login(cseq=200)
        assert setup.users.lookups == lookups  # banned: answered before any digest work
    bans = [r.getMessage() for r in caplog.records]
    assert bans == ["banned 'alice' from 198.51.100.7 for 100 s after 3 failed authentication(s)"]
    # The neighbour behind the same address is not banned; alice from elsewhere is not either.
    _, bob = await setup.login("bob", "b0b", call_id="bob")
    assert bob.status == 200
    _, elsewhere = await setup.login(cseq=300, source=("192.0.2.99", 5060), call_id="far")
    assert elsewhere.status == 200
    setup.clock.advance(101)
    _, back = await setup.login(cseq=400)
    assert back.status == 200


async def test_an_address_guessing_many_users_is_banned_whole() -> None:
    setup = Setup(max_users=3)
    for name in ["u1", "u2", "u3"]:
        _, final = await setup.login(name, "guess", call_id=name)
        assert final.status == 401
    assert (await setup.send(register(C1))).status == 403  # even without credentials
    _, elsewhere = await setup.login(source=("192.0.2.99", 5060))
    assert elsewhere.status == 200


async def test_the_offer_can_be_md5_only_for_clients_that_read_only_the_first() -> None:
    setup = Setup(algorithms=("md5",))
    challenge = await setup.send(register(C1))
    assert [c["algorithm"] for c in challenges(challenge)] == ["MD5"]
    _, final = await setup.login(algorithm="MD5", cseq=5)
    assert final.status == 200
    # SHA-256 is not offered, so not accepted either.
    sha = credentials(challenge, "alice", "wonderland", algorithm="MD5").replace("MD5", "SHA-256")
    assert (await setup.send(register(C1, cseq=9, extra=[("Authorization", sha)]))).status == 401


@pytest.mark.parametrize("algorithms", [(), ("SHA-512-256",), ("MD5", "md5")])
def test_the_offer_is_checked(algorithms: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="algorithms"):
        AuthPolicy(realm=REALM, algorithms=algorithms)


async def test_lookups_can_be_challenged_too() -> None:
    """With INVITE in the methods, a stranger cannot learn which AORs are bound."""
    setup = Setup(methods=frozenset({"REGISTER", "invite"}))
    _, final = await setup.login()
    assert final.status == 200
    assert (await setup.send(build("INVITE", ALICE))).status == 401
    assert (await setup.send(build("INVITE", "sip:nobody@example.com"))).status == 401
    assert (await setup.send(build("OPTIONS", f"sip:{SERVER_IP}"))).status == 200


async def test_spoofed_failures_ban_nobody() -> None:
    """Failures count only on a nonce issued to the address: a spoofer never receives one."""
    setup = Setup(max_users=3, max_failures=2)
    for name in ["u1", "u2", "u3", "alice", "alice"]:  # as if from the victim, no round trip
        forged = (
            f'Digest username="{name}", realm="{REALM}", nonce="{"A" * 43}", uri="sip:example.com",'
            f' response="{"0" * 64}", algorithm=SHA-256, qop=auth, nc=00000001, cnonce="x"'
        )
        answer = await setup.send(register(C1, call_id=name, extra=[("Authorization", forged)]))
        assert answer.status == 401
    _, final = await setup.login()  # the victim, from the spoofed address
    assert final.status == 200


async def test_a_nonce_from_another_address_is_no_oracle(setup: Setup) -> None:
    """The right password on a nonce issued elsewhere gets what a wrong one gets."""
    challenge = await setup.send(register(C1), ("203.0.113.66", 5060))
    right = credentials(challenge, "alice", "wonderland")
    wrong = credentials(challenge, "alice", "guess")
    first = await setup.send(register(C1, cseq=2, extra=[("Authorization", right)]))
    second = await setup.send(register(C1, cseq=2, call_id="b", extra=[("Authorization", wrong)]))
    assert (first.status, second.status) == (401, 401)
    assert shape(first) == shape(second)
    assert await setup.registrar.query(ALICE) == []


async def test_a_header_captured_before_a_restart_binds_nothing_after_it() -> None:
    before = Setup()
    challenge = await before.send(register(C1))
    value = credentials(challenge, "alice", "wonderland")
    assert (await before.send(register(C1, cseq=2, extra=[("Authorization", value)]))).status == 200
    after = Setup()  # the same nonce key, a new process
    replay = await after.send(
        register("sip:mallory@203.0.113.66", cseq=3, extra=[("Authorization", value)])
    )
    assert replay.status == 401
    assert all(c.get("stale") == "true" for c in challenges(replay))  # the owner just signs again
    assert await after.registrar.query(ALICE) == []


async def test_qop_is_hashed_as_the_client_spelt_it(setup: Setup) -> None:
    challenge = await setup.send(register(C1))
    value = credentials(challenge, "alice", "wonderland", qop_text="Auth")
    assert (await setup.send(register(C1, cseq=2, extra=[("Authorization", value)]))).status == 200


def test_ack_and_cancel_cannot_be_challenged() -> None:
    with pytest.raises(ValueError, match="ACK and CANCEL"):
        AuthPolicy(realm=REALM, methods=frozenset({"REGISTER", "ACK"}))


@pytest.mark.parametrize(
    ("agent", "offered"),
    [
        (None, ["SHA-256", "MD5"]),
        ("Linphone/5.2", ["SHA-256", "MD5"]),
        ("JsSIP 3.13.8", ["MD5"]),
        ("sipsak 0.9.8.1", ["MD5"]),
        ("SIPp", ["MD5"]),
        ("baresip v1.0.0 (x86_64/linux)", ["MD5"]),
        ("MyJsSIP", ["SHA-256", "MD5"]),  # a prefix, not a substring
    ],
)
async def test_clients_that_read_only_the_first_challenge_are_offered_md5(
    agent: str | None, offered: list[str]
) -> None:
    setup = Setup()
    extra = [] if agent is None else [("User-Agent", agent)]
    challenge = await setup.send(register(C1, extra=extra))
    assert [c["algorithm"] for c in challenges(challenge)] == offered
    # Either algorithm is still accepted, whoever asks.
    value = credentials(challenge, "alice", "wonderland", algorithm=offered[-1])
    ok = await setup.send(register(C1, cseq=2, extra=[*extra, ("Authorization", value)]))
    assert ok.status == 200
