"""Digest authentication (RFC 3261 section 22, RFC 7616, RFC 8760) and the Authorize step.

The maths (:mod:`.digest`), nonces (:mod:`.nonce`) and the brute-force guard
(:mod:`.guard`) are sans-I/O: the clock and the secrets come in as arguments.
"""

from .policy import AuthPolicy
from .step import Authorize, CredentialSource
from .users import User, Users, UsersFileError, load_users, save_users

__all__ = [
    "AuthPolicy",
    "Authorize",
    "CredentialSource",
    "User",
    "Users",
    "UsersFileError",
    "load_users",
    "save_users",
]
