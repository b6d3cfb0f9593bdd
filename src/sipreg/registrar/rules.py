"""RFC 3261 section 10.3 as pure functions: a REGISTER plus the current bindings in, a plan out.

Nothing here reads a clock, a socket or a store: ``now`` and the AOR's
stored state are arguments.  Every refusal is a :class:`~sipreg.errors.SipError`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final, overload

from .. import _abnf
from .._scan import Scanner
from .._value import Value
from ..errors import (
    BadExtension,
    BadRequest,
    Forbidden,
    IntervalTooBrief,
    NotFound,
    ParseError,
    UnsupportedMediaType,
    UnsupportedUriScheme,
)
from ..headers import parse_contacts, parse_delta_seconds, parse_option_tags
from ..message import Request, Response
from ..responses import http_date, make_response
from ..uri import NameAddr, SipUri, Uri, format_params, parse_name_addr, parse_uri, uri_equal
from .binding import AorState, Binding, Change, outbound_key
from .policy import Policy, covers

#: Section 10.3 step 7 allows a 423 only for intervals below one hour.
_ONE_HOUR: Final = 3600


class Source(Value):
    """Where a request came from, on which local socket, and the connection to tie it to.

    ``connection`` is set when the bindings it makes live only as long as the
    connection they came over (see :attr:`Binding.connection`).
    """

    __slots__ = ("address", "connection", "local", "transport")
    transport: Final[str]
    address: Final[tuple[str, int]]
    local: Final[tuple[str, int]]
    connection: Final[str | None]

    def __init__(
        self,
        transport: str,
        address: tuple[str, int],
        local: tuple[str, int],
        connection: str | None = None,
    ) -> None:
        self.transport = transport
        self.address = address
        self.local = local
        self.connection = connection


class RegisterPlan(Value):
    """The outcome of a REGISTER: the change to store (None for a query) and the 200 to send.

    ``bindings`` are those the 200 lists; ``asked`` is how many contacts the
    REGISTER named (``*`` is one, a query none).  ``evicted`` are the bindings the
    change removes to make room (``max_contacts_policy`` ``replace-oldest``).
    """

    __slots__ = ("aor", "asked", "bindings", "change", "evicted", "response")
    aor: Final[str]
    change: Final[Change | None]
    bindings: Final[tuple[Binding, ...]]
    response: Final[Response]
    evicted: Final[tuple[Binding, ...]]
    asked: Final[int]

    def __init__(
        self,
        aor: str,
        change: Change | None,
        bindings: tuple[Binding, ...],
        response: Response,
        evicted: tuple[Binding, ...] = (),
        asked: int = 0,
    ) -> None:
        self.aor = aor
        self.change = change
        self.bindings = bindings
        self.response = response
        self.evicted = evicted
        self.asked = asked


@lru_cache(maxsize=8192)
def parsed_contact(text: str) -> Uri:
    """A stored contact string parsed back to a URI (cached: bindings are compared often)."""
    return parse_uri(text)


def check_required(request: Request, policy: Policy) -> None:
    """RFC 3261 8.2.2.3 / 10.3 step 2: every ``Require`` tag must be supported, else 420."""
    tags = parse_option_tags(request.headers.values("require"), "Require")
    unsupported = [t for t in tags if t.lower() not in policy.supported]
    if unsupported:
        raise BadExtension(unsupported)


def check_request_uri(request: Request, policy: Policy, *, secure: bool) -> SipUri:
    """Step 1: the Request-URI must name a served domain or this server (else 416/403).

    A ``sips:`` one must have come over TLS (``secure``), else 416 (RFC 5630 section
    4.1: a SIPS URI is secured hop by hop, the last hop included).
    """
    ruri = request.uri
    if not isinstance(ruri, SipUri):
        raise UnsupportedUriScheme(f"Unsupported Request-URI scheme {ruri.scheme}")
    if ruri.scheme == "sips" and not secure:
        raise UnsupportedUriScheme("A sips Request-URI needs TLS (RFC 5630)")
    if not policy.accepts_request_uri(ruri.host):
        raise Forbidden(f"Domain {ruri.host} is not served here")
    return ruri


def address_of_record(request: Request, ruri: SipUri, policy: Policy, *, secure: bool) -> str:
    """Step 5: the canonical AOR from To, which must be valid for the Request-URI's domain.

    A Request-URI naming a served domain admits AORs under that same served
    domain; one naming this server itself (say its IP address) admits any served one.
    A ``sips:`` AOR is registered over TLS only (``secure``), else 403: its
    bindings are reached only over TLS, so they must be made over it too.
    """
    to = request.to.uri
    if not isinstance(to, SipUri):
        # Section 10.2: the AOR "MUST be a SIP URI or SIPS URI"; RFC 4475 3.3.4 (unksm2).
        raise BadRequest("The To URI is not a SIP or SIPS address of record")
    if to.scheme == "sips" and not secure:
        raise Forbidden("A sips address of record is registered over TLS only (RFC 5630)")
    if policy.served_domain(to.host) is None:
        raise NotFound(f"Address of record {to.host} is not in a served domain")
    ruri_domain = policy.served_domain(ruri.host)
    if ruri_domain is not None and not covers(ruri_domain, to.host):
        raise NotFound(f"Address of record {to.host} is not valid for domain {ruri.host}")
    return to.address_of_record()


def _requested_expires(contact: NameAddr | None, header: int | None, policy: Policy) -> int:
    param = None if contact is None else contact.param("expires")
    if param is not None:
        try:
            return parse_delta_seconds(param, "Contact expires parameter")
        except ParseError:  # sections 10.2 and 20.10: "treated as equivalent to 3600"
            return _ONE_HOUR
    if header is not None:
        return header
    return policy.default_expires


def _expires_header(request: Request) -> int | None:
    value = request.headers.single("expires")
    return None if value is None else parse_delta_seconds(value, "Expires")


def _check_order(binding: Binding, request: Request) -> None:
    """Step 7: the same Call-ID must come with a higher CSeq, or the whole request fails."""
    if binding.call_id == request.call_id and request.cseq.number <= binding.cseq:
        raise BadRequest("CSeq out of order for an existing binding")


def plan_register(
    request: Request, state: AorState, now: float, policy: Policy, source: Source
) -> RegisterPlan:
    """Apply RFC 3261 section 10.3 steps 6 to 8 to the AOR's stored ``state``.

    A contact with ``+sip.instance`` and ``reg-id`` in a REGISTER that asks for
    outbound (RFC 5626 section 6) binds by that instance and reg-id: the same pair
    replaces its binding whatever its URI and Call-ID, and the 200 carries
    ``Require: outbound``.  Any other contact binds by its URI (section 19.1.4).
    The request must have passed :func:`check_target` and :func:`check_aor`.
    Raises a SipError when it must fail whole.
    """
    aor = state.aor
    live = [b for b in state.bindings if not b.is_expired(now)]
    dead = [b.key for b in state.bindings if b.is_expired(now)]
    if any(not v.strip(" \t") for v in request.headers.get_all("contact")):
        raise BadRequest("Empty Contact header field")
    contacts = parse_contacts(request.headers.values("contact"))
    header_expires = _expires_header(request)

    if contacts is None:  # step 6: Contact: *
        if header_expires != 0:
            raise BadRequest("Contact: * requires Expires: 0")
        for b in live:
            _check_order(b, request)
        return _plan(request, state, now, (*dead, *(b.key for b in live)), (), (), False, 1)

    if not contacts:  # a query
        change = Change(aor, state.version, remove=tuple(dead)) if dead else None
        return RegisterPlan(aor, change, tuple(live), _ok(request, live, now, False))

    if len(contacts) > policy.max_contacts:  # before any quadratic work
        raise Forbidden(f"Too many contacts (at most {policy.max_contacts})")
    outbound = outbound_requested(request)
    wanted: list[tuple[Uri, NameAddr, int, str | None]] = []
    for c in contacts:
        if len(str(c)) > policy.max_contact_length:
            raise BadRequest(f"Contact longer than {policy.max_contact_length} characters")
        expires = _requested_expires(c, header_expires, policy)
        if 0 < expires < min(policy.min_expires, _ONE_HOUR):  # step 7: "if and only if"
            raise IntervalTooBrief(policy.min_expires)
        key = _flow_key(c) if outbound else None
        # Step 7 takes contacts in turn: a second copy would meet the binding the first
        # made, with the same Call-ID and CSeq, and "the request fails".
        if any(w[3] == key if key else w[3] is None and uri_equal(w[0], c.uri) for w in wanted):
            raise BadRequest(f"Contact {c.uri} is listed twice")
        wanted.append((c.uri, c, expires, key))

    flows = any(w[3] is not None for w in wanted)
    texts = [str(w[0]) for w in wanted]  # each contact URI as a binding stores it
    matched = [_matches(live, w[0], text, w[3]) for w, text in zip(wanted, texts, strict=True)]
    if _already_applied(request, wanted, matched, policy):
        change = Change(aor, state.version, remove=tuple(dead)) if dead else None
        current = sorted(live, key=Binding.preference)
        response = _ok(request, current, now, flows)
        return RegisterPlan(aor, change, tuple(current), response, asked=len(contacts))
    remove: list[str] = list(dead)
    upsert: list[Binding] = []
    kept = {b.key: b for b in live}
    for (_, contact, expires, key), text, matches in zip(wanted, texts, matched, strict=True):
        for existing in matches:
            # RFC 5626 section 6: a flow's binding is replaced whatever its Call-ID.
            if key is None or existing.call_id == request.call_id:
                _check_order(existing, request)
        new_key = key or text  # one string for both: a binding's memory counts
        for existing in matches:
            if existing.contact == text:  # the old strings, which the store's index holds
                text = existing.contact
            if existing.key == new_key:
                new_key = existing.key
            kept.pop(existing.key, None)
            if existing.key != new_key or expires == 0:
                remove.append(existing.key)
        if expires:
            upsert.append(
                _binding(aor, text, contact, expires, request, now, policy, source, new_key)
            )
    excess = len(kept) + len(upsert) - policy.max_contacts
    evicted: tuple[Binding, ...] = ()
    if excess > 0:
        if policy.max_contacts_policy == "reject":
            raise Forbidden(f"Too many contacts for {aor} (at most {policy.max_contacts})")
        # replace-oldest: the bindings this request leaves alone that expire soonest go.
        evicted = tuple(sorted(kept.values(), key=lambda b: (b.expires_at, b.key))[:excess])
        for b in evicted:
            del kept[b.key]
            remove.append(b.key)
    plan = _plan(
        request, state, now, tuple(remove), tuple(upsert), tuple(kept.values()), flows,
        len(contacts),
    )  # fmt: skip
    return plan.replace(evicted=evicted) if evicted else plan


def _matches(live: list[Binding], uri: Uri, text: str, key: str | None) -> list[Binding]:
    """The live bindings a contact updates: its flow's (RFC 5626), else those of its URI.

    ``text`` is ``str(uri)``: a binding that stores that very text is the URI's (a URI
    equals its own text parsed again), so a refresh parses no stored contact.  Section
    19.1.4 equality is not transitive, so one URI can match several bindings.
    """
    if key is not None:
        return [b for b in live if b.key == key]
    return [
        b
        for b in live
        if b.key == b.contact and (b.contact == text or uri_equal(parsed_contact(b.contact), uri))
    ]


def _already_applied(
    request: Request,
    wanted: list[tuple[Uri, NameAddr, int, str | None]],
    matched: list[list[Binding]],
    policy: Policy,
) -> bool:
    """True when this Call-ID and CSeq stored exactly these contacts and expiries already.

    A retransmission whose first answer was lost, once the transaction cache has
    let it go: it was applied, so it gets the current bindings and changes nothing,
    where the CSeq rule would answer 400 and the phone believe it failed.
    """
    call_id, cseq = request.call_id, request.cseq.number
    if not any(b.call_id == call_id and b.cseq == cseq for m in matched for b in m):
        return False
    for (_, _, expires, _), matches in zip(wanted, matched, strict=True):
        if expires == 0:  # applied, it left no binding of this contact
            if matches:
                return False
            continue
        lifetime = policy.clamp_expires(expires)
        if not any(
            b.call_id == call_id
            and b.cseq == cseq
            and abs(b.expires_at - b.registered_at - lifetime) < 1e-3
            for b in matches
        ):
            return False
    return True


def outbound_requested(request: Request) -> bool:
    """True when a REGISTER asks for outbound processing (RFC 5626 sections 4.2.1 and 6).

    It must say ``Supported: outbound``, and come straight from the client (one Via)
    or through an edge proxy that took part (the first Path URI has ``ob``).
    """
    supported = parse_option_tags(request.headers.values("supported"), "Supported")
    if "outbound" not in (t.lower() for t in supported):
        return False
    if len(request.vias) == 1:
        return True
    paths = request.headers.values("path")
    if not paths:
        return False
    try:
        first = parse_name_addr(paths[0], "Path").uri
    except ParseError:
        return False
    return isinstance(first, SipUri) and first.param("ob") is not None


def _flow_key(contact: NameAddr) -> str | None:
    """The outbound key of a Contact with ``+sip.instance`` and ``reg-id``, else None."""
    instance, reg_id = contact.param("+sip.instance"), contact.param("reg-id")
    if not instance or not reg_id or not reg_id.isdigit():
        return None
    urn = instance[1:-1] if len(instance) > 1 and instance[0] == '"' == instance[-1] else instance
    if not urn.isascii():  # a URN is ASCII (RFC 8141); bytes that were not UTF-8 least of all
        raise BadRequest("Malformed +sip.instance")
    return outbound_key(urn.strip("<>").lower(), int(reg_id))


def _plan(
    request: Request,
    state: AorState,
    now: float,
    remove: tuple[str, ...],
    upsert: tuple[Binding, ...],
    kept: tuple[Binding, ...],
    outbound: bool,
    asked: int,
) -> RegisterPlan:
    current = sorted(kept + upsert, key=Binding.preference)
    change = Change(state.aor, state.version, remove=remove, upsert=upsert)
    response = _ok(request, current, now, outbound)
    return RegisterPlan(state.aor, change, tuple(current), response, asked=asked)


def _binding(
    aor: str,
    uri: str,
    contact: NameAddr,
    expires: int,
    request: Request,
    now: float,
    policy: Policy,
    source: Source,
    key: str,
) -> Binding:
    q = contact.param("q")
    reg_id = contact.param("reg-id")
    params = tuple((n, v) for n, v in contact.params if n.lower() not in ("expires", "q"))
    return Binding(
        aor=aor,
        key=key,
        contact=uri,
        expires_at=now + policy.clamp_expires(expires),
        call_id=request.call_id,
        cseq=request.cseq.number,
        q=None if q is None else float(q),
        params=params,
        registered_at=now,
        source=(_shared(source.address[0], _HOSTS), source.address[1]),
        transport=source.transport,
        local=source.local,
        user_agent=_shared(request.headers.get("user-agent"), _USER_AGENTS),
        instance=contact.param("+sip.instance"),
        reg_id=int(reg_id) if reg_id and reg_id.isdigit() else None,
        path=tuple(request.headers.values("path")),
        connection=source.connection,
        node=policy.node,
    )


#: Distinct texts of each kind kept shared: phones of one kind send one User-Agent,
#: and many phones come through one proxy or NAT.
SHARED_TEXTS: Final = 1024
_USER_AGENTS: Final[dict[str, str]] = {}
_HOSTS: Final[dict[str, str]] = {}


@overload
def _shared(text: str, copies: dict[str, str]) -> str: ...
@overload
def _shared(text: None, copies: dict[str, str]) -> None: ...
def _shared(text: str | None, copies: dict[str, str]) -> str | None:
    """One copy of a text many bindings hold alike (the first SHARED_TEXTS of ``copies``)."""
    if text is None:
        return None
    found = copies.get(text)
    if found is None:
        if len(copies) >= SHARED_TEXTS:
            return text
        found = copies[text] = text
    return found


def contact_value(binding: Binding, now: float) -> str:
    """A Contact header value listing ``binding`` with its remaining ``expires`` and ``q``."""
    q = "" if binding.q is None else f";q={format_qvalue(binding.q)}"
    return f"<{binding.contact}>{format_params(binding.params)}{q};expires={binding.remaining(now)}"


def format_qvalue(q: float) -> str:
    """``q`` in the qvalue grammar: 0 to 1 with at most three decimals."""
    return f"{min(1.0, max(0.0, q)):.3f}".rstrip("0").rstrip(".")


def _ok(
    request: Request, bindings: list[Binding] | tuple[Binding, ...], now: float, outbound: bool
) -> Response:
    """Step 8: 200 listing every current binding, with Date (the front adds the To tag)."""
    extra = [("Contact", contact_value(b, now)) for b in bindings]
    supported = parse_option_tags(request.headers.values("supported"), "Supported")
    if "path" in (t.lower() for t in supported):  # RFC 3327 section 5.3
        extra += [("Path", p) for p in request.headers.values("path")]
    if outbound:  # RFC 5626 section 6: outbound processing was applied
        extra.append(("Require", "outbound"))
    extra.append(("Date", http_date(now)))
    return make_response(request.headers, 200, "OK", extra)


def check_target(request: Request, policy: Policy, *, secure: bool) -> SipUri:
    """Steps 1 and 2, after the fields every request needs: the Request-URI, then Require.

    ``secure`` says the request came over TLS.  Authentication (steps 3 and 4)
    comes after these and before :func:`check_aor`.  Returns the Request-URI.
    """
    request.check()
    ruri = check_request_uri(request, policy, secure=secure)  # step 1 comes before step 2
    check_required(request, policy)
    return ruri


def check_aor(request: Request, ruri: SipUri, policy: Policy, *, secure: bool) -> str:
    """Step 5, and the body rule: everything left to check before the store is read.

    Returns the canonical AOR.
    """
    aor = address_of_record(request, ruri, policy, secure=secure)
    _check_body(request)
    return aor


def _check_body(request: Request) -> None:
    """Section 8.2.3: a body this registrar cannot use gets 415, unless marked optional."""
    if not request.body:
        return
    if not _optional(request.headers.get("content-disposition")):
        raise UnsupportedMediaType(
            "A REGISTER body is not understood here", headers=[("Accept", "")]
        )


def _optional(disposition: str | None) -> bool:
    """True for ``Content-Disposition: TYPE;handling=optional`` (section 20.11)."""
    if disposition is None:
        return False
    scan = Scanner(disposition, "Content-Disposition")
    try:
        scan.match(_abnf.TOKEN_PREFIX_RE, "disposition type")
        params = scan.params()
    except ParseError:
        return False
    return any(n.lower() == "handling" and (v or "").lower() == "optional" for n, v in params)
