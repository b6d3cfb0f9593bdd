"""Digest maths (RFC 7616 test vectors) and the Authorization header parser."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sipreg import _abnf
from sipreg._scan import unquote
from sipreg.auth import digest
from sipreg.auth.digest import (
    Credentials,
    _plain_auth_params,
    canonical_algorithm,
    challenge,
    check_shape,
    ha1,
    parse_credentials,
    response,
)
from sipreg.errors import ParseError
from sipreg.framing import StreamFramer
from sipreg.message import Request, parse_message

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# RFC 7616 section 3.9.1: Mufasa, "Circle of Life", GET /dir/index.html.
RFC = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "method": "GET",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "nc": "00000001",
}


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc_7616_section_3_9_1_vectors(algorithm: str, expected: str) -> None:
    key = ha1(algorithm, RFC["username"], RFC["realm"], RFC["password"])
    got = response(
        algorithm,
        key,
        method=RFC["method"],
        uri=RFC["uri"],
        nonce=RFC["nonce"],
        qop="auth",
        nc=RFC["nc"],
        cnonce=RFC["cnonce"],
    )
    assert got == expected


def test_rfc_2069_response_without_qop() -> None:
    # RFC 2617 3.2.2.1: request-digest = KD(H(A1), nonce ":" H(A2)) when no qop is sent.
    def h(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    key = ha1("MD5", "alice", "example.com", "secret")
    assert key == h("alice:example.com:secret")
    expected = h(f"{key}:n0nce:{h('REGISTER:sip:example.com')}")
    assert response("MD5", key, method="REGISTER", uri="sip:example.com", nonce="n0nce") == expected
    sha = ha1("SHA-256", "alice", "example.com", "secret")
    assert sha == hashlib.sha256(b"alice:example.com:secret").hexdigest()


@pytest.mark.parametrize(
    ("name", "algorithm"),
    [(None, "MD5"), ("MD5", "MD5"), ("md5", "MD5"), ("SHA-256", "SHA-256"), ("sha-256", "SHA-256"),
     ("SHA-512-256", None), ("MD5-sess", None), ("AKAv1-MD5", None), ("", None)],
)  # fmt: skip
def test_algorithms(name: str | None, algorithm: str | None) -> None:
    assert canonical_algorithm(name) == algorithm


# --- the Authorization header -----------------------------------------------------------

SIPP = (
    'Digest username="alice",realm="example.com",uri="sip:127.0.0.1:5060",'
    'nonce="abc",response="0123456789abcdef0123456789abcdef",algorithm=MD5,'
    'cnonce="6b8b4567",qop=auth,nc=00000001'
)
VALUES: dict[str, tuple[str, dict[str, str]]] = {
    "rfc3261": (
        'Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",'
        ' uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b",'
        ' response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"',
        {"username": "bob", "realm": "biloxi.com", "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
         "uri": "sip:bob@biloxi.com", "qop": "auth", "nc": "00000001", "cnonce": "0a4f113b",
         "response": "6629fae49393a05397450978507c4ef1",
         "opaque": "5ccc069c403ebaf9f0171e9517f40e41"},
    ),
    "sipp": (SIPP, {"username": "alice", "realm": "example.com", "uri": "sip:127.0.0.1:5060",
                    "nonce": "abc", "response": "0123456789abcdef0123456789abcdef",
                    "algorithm": "MD5", "cnonce": "6b8b4567", "qop": "auth", "nc": "00000001"}),
    "quoted-qop-and-escapes": (
        'DIGEST  Username = "a\\"b" ,REALM="r",qop="auth"',
        {"username": 'a"b', "realm": "r", "qop": "auth"},
    ),
    "other-scheme": ("NoOneKnowsThisScheme opaque-data=here", {"opaque-data": "here"}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(VALUES))
def test_whole(name: str) -> None:
    value, params = VALUES[name]
    credentials = parse_credentials(value)
    assert dict(credentials.params) == params
    assert credentials.is_digest is (name != "other-scheme")


@pytest.mark.parametrize("name", sorted(VALUES))
def test_every_prefix_parses_or_is_a_parse_error(name: str) -> None:
    value, params = VALUES[name]
    for end in range(len(value)):
        try:
            prefix = parse_credentials(value[:end])
        except ParseError:
            continue
        assert len(prefix.params) <= len(params)  # a prefix can end in a whole token value


@pytest.mark.parametrize("name", sorted(VALUES))
def test_in_a_message_fed_byte_by_byte(name: str) -> None:
    value, params = VALUES[name]
    data = (
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\n"
        "To: <sip:alice@example.com>\r\nFrom: <sip:alice@example.com>;tag=1\r\n"
        "Call-ID: c1\r\nCSeq: 1 REGISTER\r\n"
        f"Authorization: {value}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    framer = StreamFramer()
    out = [item for i in range(len(data)) for item in framer.feed(data[i : i + 1])]
    assert out == [data]
    request = parse_message(data, datagram=False)
    assert isinstance(request, Request)
    [header] = request.headers.get_all("authorization")
    assert dict(parse_credentials(header).params) == params


@pytest.mark.parametrize("name", sorted(VALUES))
def test_trailing_data(name: str) -> None:
    value, params = VALUES[name]
    assert dict(parse_credentials(value + ", extra=1").params) == {**params, "extra": "1"}
    for junk in [" junk", ",", ", ", ";x=1", ' "dangling"', ", =1"]:
        with pytest.raises(ParseError):
            parse_credentials(value + junk)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest",
        "Digest ",
        'Digest username="a", username="b"',  # RFC 7616 3.4: each parameter at most once
        'Digest Realm="a", realm="a"',  # names are case-insensitive
        'Digest username="unterminated',
        "Digest username",
        "Digest =x",
        "Digest,username=x",
    ],
)
def test_malformed(value: str) -> None:
    with pytest.raises(ParseError):
        parse_credentials(value)


def test_check_shape() -> None:
    good = Credentials("Digest", {"response": "a" * 32, "nc": "0000000A"})
    check_shape(good, "MD5")
    for params in [
        {"response": "a" * 64},
        {"response": "x" * 32},
        {"response": "a" * 15 + "-" + "a" * 16},  # hex at both ends, not in between
        {"response": "a" * 32, "nc": "1"},
        {"response": "a" * 32, "nc": "0000000g"},
        {"response": "a" * 31 + "\u0665"},  # a digit, but not an ASCII one
        {"response": "a" * 32, "nc": "0000000\u212a"},  # KELVIN SIGN, lower case "k"
    ]:
        with pytest.raises(ParseError):
            check_shape(Credentials("Digest", params), "MD5")
    check_shape(Credentials("Digest", {"response": "A" * 64}), "SHA-256")


def test_challenge() -> None:
    assert challenge("example.com", "n1", "SHA-256", qop=True, stale=False) == (
        'Digest realm="example.com", qop="auth", algorithm=SHA-256, nonce="n1"'
    )
    stale = challenge("example.com", "n1", "MD5", qop=True, stale=True)
    assert stale.endswith(", stale=true")
    again = parse_credentials(stale)  # a challenge has the same shape as credentials
    assert dict(again.params) == {
        "realm": "example.com", "qop": "auth", "algorithm": "MD5", "nonce": "n1", "stale": "true",
    }  # fmt: skip


# --- properties ---------------------------------------------------------------------------

_NAMES = st.sampled_from(["username", "realm", "nonce", "uri", "response", "qop", "nc", "x-y"])
_QUOTABLE = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n"),
    max_size=20,
)


@FUZZ
@given(st.text(max_size=80))
def test_any_text_parses_or_is_a_parse_error(text: str) -> None:
    try:
        credentials = parse_credentials(text)
    except ParseError:
        return
    assert credentials.scheme and credentials.params


@FUZZ
@given(st.dictionaries(_NAMES, _QUOTABLE, min_size=1), st.sampled_from([",", ", ", " , "]))
def test_round_trip(params: dict[str, str], comma: str) -> None:
    quoted = [f'{n}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
              for n, v in params.items()]  # fmt: skip
    assert dict(parse_credentials("Digest " + comma.join(quoted)).params) == params


def _loop_params(value: str, pos: int) -> dict[str, str] | None:
    """The auth-params the expression loop reads from ``pos`` on; None where it refuses."""
    params: dict[str, str] = {}
    while True:
        m = _abnf.AUTH_PARAM_ITEM_RE.match(value, pos)
        if m is None or m.group(1).lower() in params:
            return None
        pos = m.end()
        raw = m.group(2)
        params[m.group(1).lower()] = unquote(raw) if raw.startswith('"') else raw
        if not m.group(3):
            return params


_PARAM_TEXT = st.lists(
    st.sampled_from(
        ["username", "NC", "=", '"', '"a,b"', "00000001", ",", " ", "\t", "auth", "x y",
         "\\", "\n", "K", "é", "sip:a@b;c", "=="]
    ),
    max_size=14,
).map("".join)  # fmt: skip


@settings(max_examples=5000)
@given(_PARAM_TEXT)
@example('username="a", realm="b",nc=00000001 , qop=auth')
@example('a="1", A="2"')
@example("a=1,")
@example("\u212a=1")
@example('uri="sip:a,b", x=1')
@example('a=",", b=1')
def test_plain_auth_params_are_what_the_expression_loop_reads(text: str) -> None:
    plain = _plain_auth_params(text, 0)
    if plain is not None:
        assert plain == _loop_params(text, 0)
    try:
        credentials = parse_credentials("Digest " + text)
    except ParseError:
        assert _loop_params(text, 0) is None
    else:
        assert dict(credentials.params) == _loop_params(text, 0)


def test_h_a2_is_remembered_for_a_bounded_number_of_uris() -> None:
    a1 = ha1("MD5", "bob", "example.com", "pw")
    first = response("MD5", a1, method="REGISTER", uri="sip:example.com", nonce="n")
    for n in range(1100):  # the uri is the client's: the memo never grows past its bound
        response("MD5", a1, method="REGISTER", uri=f"sip:{n}.example.com", nonce="n")
        assert len(digest._HA2) <= 1024
    again = response("MD5", a1, method="REGISTER", uri="sip:example.com", nonce="n")
    ha2 = hashlib.md5(b"REGISTER:sip:example.com").hexdigest()
    assert first == again == hashlib.md5(f"{a1}:n:{ha2}".encode()).hexdigest()
