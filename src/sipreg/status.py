"""SIP status codes and their reason phrases (RFC 3261 section 21 and extensions)."""

from __future__ import annotations

REASONS: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    202: "Accepted",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
    603: "Decline",
}


def reason_phrase(status: int) -> str:
    """The standard reason phrase of ``status``, or a generic one for its class."""
    phrase = REASONS.get(status)
    if phrase is not None:
        return phrase
    return {
        1: "Provisional",
        2: "Success",
        3: "Redirection",
        4: "Client Error",
        5: "Server Error",
        6: "Global Failure",
    }.get(status // 100, "Unknown")
