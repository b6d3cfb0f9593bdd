"""A Digest client for the tests: answers a 401 the way RFC 7616 section 3.4 says."""

from __future__ import annotations

from sipreg.auth.digest import ha1, parse_credentials, response
from sipreg.message import Response


def challenges(answer: Response) -> list[dict[str, str]]:
    """The WWW-Authenticate challenges of a 401, in order, as parameter dicts."""
    assert answer.status == 401, answer.status
    return [dict(parse_credentials(v).params) for v in answer.headers.get_all("www-authenticate")]


def credentials(
    answer: Response,
    user: str,
    password: str,
    *,
    method: str = "REGISTER",
    uri: str = "sip:example.com",
    algorithm: str = "SHA-256",
    nc: int = 1,
    cnonce: str = "0a4f113b",
    qop: bool = True,
    qop_text: str = "auth",
    realm: str | None = None,
    nonce: str | None = None,
) -> str:
    """An Authorization value for ``user``, answering ``answer``'s ``algorithm`` challenge."""
    [offer] = [c for c in challenges(answer) if c["algorithm"] == algorithm]
    realm = realm or offer["realm"]
    nonce = nonce or offer["nonce"]
    key = ha1(algorithm, user, realm, password)
    nc_text = f"{nc:08x}"
    digest = response(
        algorithm,
        key,
        method=method,
        uri=uri,
        nonce=nonce,
        qop=qop_text if qop else None,
        nc=nc_text if qop else None,
        cnonce=cnonce if qop else None,
    )
    value = (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}",'
        f' response="{digest}", algorithm={algorithm}'
    )
    if qop:
        value += f', qop={qop_text}, nc={nc_text}, cnonce="{cnonce}"'
    return value
