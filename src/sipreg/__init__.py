"""sipreg: an RFC 3261 SIP registrar with a sans-I/O core.

The public API: :class:`Registrar` (the Net::SIP::Registrar-style object),
the message layer (:func:`parse_message`, :class:`Request`, :class:`Response`),
URIs (:func:`parse_uri`, :func:`uri_equal`), the stores and the error tree.
"""

from .errors import ParseError, SipError
from .message import Request, Response, parse_message
from .registrar.binding import Binding
from .registrar.policy import Policy
from .service import Leg, Registrar
from .store import BindingStore, open_store
from .uri import parse_uri, uri_equal

__version__ = "0.1.0"

__all__ = [
    "Binding",
    "BindingStore",
    "Leg",
    "ParseError",
    "Policy",
    "Registrar",
    "Request",
    "Response",
    "SipError",
    "__version__",
    "open_store",
    "parse_message",
    "parse_uri",
    "uri_equal",
]
