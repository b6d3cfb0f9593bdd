"""sipreg: an RFC 3261 SIP registrar with a sans-I/O core.

The public API: :class:`Registrar` (the Net::SIP::Registrar-style object),
the receive chain (:class:`Front`, :class:`Chain`, :class:`Step` and the steps),
the message layer (:func:`parse_message`, :class:`Request`, :class:`Response`),
URIs (:func:`parse_uri`, :func:`uri_equal`), the stores and the error tree.
"""

from .chain import Chain, Context, Step, aor_in, source_in, unless
from .errors import ParseError, SipError
from .front import Front
from .leg import Capabilities, Leg
from .message import Request, Response, parse_message
from .outcome import Outcome
from .registrar.binding import Binding
from .registrar.facade import Registrar
from .registrar.policy import Policy
from .registrar.step import Register
from .routing.steps import Lookup, Redirect
from .store import BindingStore, open_store
from .uri import parse_uri, uri_equal

__version__ = "0.1.0"


def core_build() -> str:
    """Which core is installed: ``"mypyc"`` (compiled, see setup.py) or ``"pure Python"``."""
    from . import front

    return "pure Python" if front.__file__.endswith(".py") else "mypyc"


__all__ = [
    "Binding",
    "BindingStore",
    "Capabilities",
    "Chain",
    "Context",
    "Front",
    "Leg",
    "Lookup",
    "Outcome",
    "ParseError",
    "Policy",
    "Redirect",
    "Register",
    "Registrar",
    "Request",
    "Response",
    "SipError",
    "Step",
    "__version__",
    "aor_in",
    "core_build",
    "open_store",
    "parse_message",
    "parse_uri",
    "source_in",
    "unless",
    "uri_equal",
]
