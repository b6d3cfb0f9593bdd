"""The server's TLS context: TLS 1.2 at least, a modern cipher set, certificates reloadable.

One context serves every TLS and WSS listener.  :func:`reload` loads a new
certificate into it (SIGHUP): connections already up keep theirs, new
handshakes get the new one; a pair that does not load leaves the old one.
"""

from __future__ import annotations

import ssl

#: TLS 1.2 suites with forward secrecy and AEAD; TLS 1.3 has its own (all modern).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"


class TlsError(ValueError):
    """A certificate, key or CA file that cannot be used; the message says which and why."""


def server_context(cert: str, key: str, ca: str | None = None) -> ssl.SSLContext:
    """A server context with ``cert`` and ``key``; with ``ca``, clients must show a certificate.

    Raises TlsError naming the file that is missing, unreadable or mismatched.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    _load(context, cert, key)
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except OSError as err:  # ssl.SSLError included
            raise TlsError(f"cannot load the CA certificates {ca}: {_why(err)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def reload(context: ssl.SSLContext, cert: str, key: str) -> None:
    """Load ``cert`` and ``key`` into ``context`` once they are known to load (TlsError if not)."""
    _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key)  # the trial: nothing changes yet
    _load(context, cert, key)


def _load(context: ssl.SSLContext, cert: str, key: str) -> None:
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as err:  # before OSError, of which it is one
        raise TlsError(
            f"cannot use the certificate {cert} with the key {key}: {_why(err)}"
        ) from None
    except OSError as err:
        raise TlsError(f"cannot read the certificate {cert} or key {key}: {_why(err)}") from None


def _why(err: Exception) -> str:
    if isinstance(err, ssl.SSLError):
        return err.reason or str(err)
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return str(err)
