"""RFC 3261 section 25 grammar pieces as named regular expressions.

Each piece quotes the ABNF it implements.  Header values are matched after
unfolding, so ``LWS`` here is plain white space.  ``DIGIT`` is written ``[0-9]``:
``\\d`` would also match the digits of other scripts.
"""

from __future__ import annotations

import re
from typing import Final

# alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
# word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
#        "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
# callid = word [ "@" word ]
CALLID = rf"{WORD}(?:@{WORD})?"
# LWS = [*WSP CRLF] 1*WSP ; SWS = [LWS]   (after unfolding: white space)
SWS = r"[ \t]*"
LWS = r"[ \t]+"
# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
# qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
# Runs of qdtext, each quoted-pair between them: the same strings, one class repeat a run.
QUOTED_STRING = r'"[^"\\\r\n]*(?:\\[\x00-\x09\x0b\x0c\x0e-\x7f][^"\\\r\n]*)*"'
ESCAPED = r"%[0-9A-Fa-f]{2}"
# unreserved = alphanum / mark ; mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
UNRESERVED = r"A-Za-z0-9\-_.!~*'()"


def _runs(chars: str) -> str:
    """``1*( [chars] / escaped )`` as runs of ``chars`` with an escape between two runs.

    The same strings as the alternation, matched a run at a time instead of a
    character at a time, and in linear time: each character has one way to match.
    """
    return rf"(?:[{chars}]|{ESCAPED})[{chars}]*(?:{ESCAPED}[{chars}]*)*"


# user = 1*( unreserved / escaped / user-unreserved )
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
_USERCHAR = UNRESERVED + "&=+$,;?/"
USER = _runs(_USERCHAR)
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
PASSWORD = rf"(?:[{UNRESERVED}&=+$,]|{ESCAPED})*"
# hostname = *( domainlabel "." ) toplabel [ "." ]
# domainlabel = alphanum / alphanum *( alphanum / "-" ) alphanum
# toplabel = ALPHA / ALPHA *( alphanum / "-" ) alphanum
# (written as alphanumerics with hyphens between them: the same labels, no backtracking)
_DOMAINLABEL = r"[A-Za-z0-9]+(?:-+[A-Za-z0-9]+)*"
_TOPLABEL = r"[A-Za-z][A-Za-z0-9]*(?:-+[A-Za-z0-9]+)*"
HOSTNAME = rf"(?:{_DOMAINLABEL}\.)*{_TOPLABEL}\.?"
# IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
IPV4 = r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"
# IPv6reference = "[" IPv6address "]"  (the address itself is checked with ipaddress)
IPV6_REFERENCE = r"\[[0-9A-Fa-f:.]+\]"
HOST = rf"(?:{IPV6_REFERENCE}|{IPV4}|{HOSTNAME})"
PORT = r"[0-9]{1,5}"
# paramchar = param-unreserved / unreserved / escaped
# param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"
_PARAMCHAR = UNRESERVED + r"\[\]/:&+$"
PARAMCHARS = _runs(_PARAMCHAR)
# hname/hvalue = 1*( hnv-unreserved / unreserved / escaped ); hvalue may be empty
# hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"
HNVCHARS = rf"(?:[{UNRESERVED}\[\]/?:+$]|{ESCAPED})"
# Method = INVITEm / ... / extension-method ; extension-method = token
METHOD = TOKEN
# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT
SIP_VERSION = r"[Ss][Ii][Pp]/[0-9]+\.[0-9]+"
# Status-Code = 3DIGIT
STATUS_CODE = r"[0-9]{3}"
# delta-seconds = 1*DIGIT
DELTA_SECONDS = r"[0-9]+"
# qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
QVALUE = r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)"
# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*"
# absoluteURI opaque or hierarchical part: uric characters (RFC 2396)
URIC = rf"(?:[{UNRESERVED};/?:@&=+$,\[\]]|{ESCAPED})"

# --- composite rules -------------------------------------------------------------------

# sent-protocol = protocol-name SLASH protocol-version SLASH transport   (SLASH = SWS "/" SWS)
SENT_PROTOCOL_RE: Final = re.compile(rf"({TOKEN}){SWS}/{SWS}({TOKEN}){SWS}/{SWS}({TOKEN})")
# sent-by = host [ COLON port ]   (COLON = SWS ":" SWS)
# (the whole host: "1.2.3.4.example" is a hostname, not an IPv4address and ".example")
SENT_BY_RE: Final = re.compile(rf"({HOST})(?![A-Za-z0-9\-.])(?:{SWS}:{SWS}({PORT}))?")
# CSeq = "CSeq" HCOLON 1*DIGIT LWS Method   (at most ten digits are read)
CSEQ_RE: Final = re.compile(rf"{SWS}([0-9]{{1,10}}){LWS}({TOKEN}){SWS}\Z")
# hostport = host [ ":" port ]   (the port's digits are checked by the caller)
HOSTPORT_RE: Final = re.compile(rf"({HOST})(?::([0-9]*))?")
# display-name = *(token LWS) / quoted-string   (the token form)
DISPLAY_TOKENS_RE: Final = re.compile(rf"{TOKEN}(?:{LWS}{TOKEN})*")
# RFC 3966: global-number-digits = "+" *phonedigit DIGIT *phonedigit, or a local number;
# written so that it matches in linear time.
TEL_NUMBER_RE: Final = re.compile(r"(\+[\-.()]*[0-9][0-9\-.()]*|[0-9A-Fa-f*#\-.()pw]+)")
# gen-value = token / host / quoted-string; a bare IPv6address is accepted too, as
# via-received has it (RFC 5118 section 4.5).
GEN_VALUE = rf"{QUOTED_STRING}|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f]*:[0-9A-Fa-f:.]+|{TOKEN}"
# SEMI generic-param, with SEMI = SWS ";" SWS and generic-param = token [ EQUAL gen-value ]
SEMI_GENERIC_PARAM_RE: Final = re.compile(rf"{SWS};{SWS}({TOKEN})(?:{SWS}={SWS}({GEN_VALUE}))?")
# Request-Line = Method SP Request-URI SP SIP-Version CRLF
REQUEST_LINE_RE: Final = re.compile(rf"({METHOD}) (\S+) ({SIP_VERSION})\Z")
# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF   (Status-Code checked after)
STATUS_LINE_RE: Final = re.compile(rf"({SIP_VERSION}) ([0-9]+) ([^\r\n]*)\Z")


def full(pattern: str) -> re.Pattern[str]:
    """Compile ``pattern`` to match a whole string."""
    return re.compile(rf"(?:{pattern})\Z")


TOKEN_RE: Final = full(TOKEN)
TOKEN_PREFIX_RE: Final = re.compile(TOKEN)
CALLID_RE: Final = full(CALLID)
USER_RE: Final = full(USER)
PASSWORD_RE: Final = full(PASSWORD)
HOST_RE: Final = full(HOST)
PORT_RE: Final = full(PORT)
PARAMCHARS_RE: Final = full(PARAMCHARS)
HNAME_RE: Final = full(rf"{HNVCHARS}+")
HVALUE_RE: Final = full(rf"{HNVCHARS}*")
METHOD_RE: Final = full(METHOD)
SIP_VERSION_RE: Final = full(SIP_VERSION)
QVALUE_RE: Final = full(QVALUE)
DELTA_SECONDS_RE: Final = full(DELTA_SECONDS)
SCHEME_RE: Final = full(SCHEME)
URIC_RE: Final = full(rf"{URIC}+")
QUOTED_STRING_RE: Final = re.compile(QUOTED_STRING)

# --- authentication (RFC 3261 section 25, RFC 7616 section 3) --------------------------

# auth-param = auth-param-name EQUAL ( token / quoted-string ), after the scheme or a COMMA;
# COMMA = SWS "," SWS.  The digest parameters (dig-resp) have this shape too.
AUTH_PARAM_RE: Final = re.compile(rf"{SWS}({TOKEN}){SWS}={SWS}({QUOTED_STRING}|{TOKEN})")
#: An auth-param and what ends it: a COMMA, or the end of the value.
AUTH_PARAM_ITEM_RE: Final = re.compile(
    rf"{SWS}({TOKEN}){SWS}={SWS}({QUOTED_STRING}|{TOKEN}){SWS}(,|\Z)"
)

# --- string tests on the request path ---------------------------------------------------
# Each answers as the regular expression named in its docstring, for every string (held
# to it by tests/test_abnf.py), without a regular expression call: the forms a request
# carries most are checked with str methods, the rest go to the expression.

_ALNUM: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_TOKEN_CHARS: Final = _ALNUM + "-.!%*_+`'~"
_WORD_CHARS: Final = _TOKEN_CHARS + '()<>:\\"/[]?{}'
_USER_CHARS: Final = _ALNUM + "-_.!~*'()&=+$,;?/"
_PARAM_CHARS: Final = _ALNUM + "-_.!~*'()[]/:&+$"
#: The characters of a run of generic-params whose values are tokens.
_TOKEN_PARAMS_CHARS: Final = _TOKEN_CHARS + ";="


def _only(text: str, chars: str) -> bool:
    """``text`` is one or more of ``chars`` (which hold every ASCII letter and digit)."""
    if text.isalnum():  # the usual word: one quick pass
        return text.isascii()
    return text != "" and not text.strip(chars)


def is_token(text: str) -> bool:
    """``TOKEN_RE.match(text)``."""
    return _only(text, _TOKEN_CHARS)


def is_digits(text: str) -> bool:
    """``DELTA_SECONDS_RE.match(text)``: one or more ASCII digits."""
    return text.isascii() and text.isdigit()


def is_callid(text: str) -> bool:
    """``CALLID_RE.match(text)``."""
    word, at, domain = text.partition("@")
    return _only(word, _WORD_CHARS) and (not at or _only(domain, _WORD_CHARS))


def is_user(text: str) -> bool:
    """``USER_RE.match(text)``."""
    if "%" in text:
        return USER_RE.match(text) is not None
    return _only(text, _USER_CHARS)


def is_paramchars(text: str) -> bool:
    """``PARAMCHARS_RE.match(text)``."""
    if "%" in text:
        return PARAMCHARS_RE.match(text) is not None
    return _only(text, _PARAM_CHARS)


def host_port(text: str) -> tuple[str, str | None] | None:
    """The host and port text of ``HOSTPORT_RE.fullmatch(text)``, or None."""
    if text.startswith("["):
        m = HOSTPORT_RE.fullmatch(text)
        return (m.group(1), m.group(2)) if m else None
    host, colon, port = text.partition(":")
    if colon and port and not is_digits(port):
        return None
    if not _is_ipv4_or_hostname(host):
        return None
    return host, port if colon else None


def _is_ipv4_or_hostname(host: str) -> bool:
    """``IPv4address / hostname``, the whole of ``host``."""
    if not host.isascii():
        return False
    labels = host.split(".")
    if len(labels) == 4 and all(0 < len(label) <= 3 and label.isdigit() for label in labels):
        return True
    if labels[-1] == "":  # hostname = *( domainlabel "." ) toplabel [ "." ]
        labels.pop()
    for label in labels:
        # alphanumerics with hyphens between them
        if not (label[:1].isalnum() and label[-1].isalnum() and label.replace("-", "").isalnum()):
            return False
    return bool(labels) and labels[-1][0].isalpha()


def token_params(text: str) -> list[tuple[str, str | None]] | None:
    """``*( SEMI generic-param )`` matched to the end of ``text``, where every value is a token.

    The pairs :data:`SEMI_GENERIC_PARAM_RE` reads from all of ``text``; None when
    ``text`` is not of that plain form (white space, quoted or host values, a
    malformed parameter), which leaves it to the expression.
    """
    if text == "":
        return []
    if text[0] != ";" or text.strip(_TOKEN_PARAMS_CHARS):
        return None
    out: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        if not name or (eq and (not value or "=" in value)):
            return None
        out.append((name, value if eq else None))
    return out
