"""Bindings in Redis (or Valkey), shared by every registrar node that names the same server.

URLs (``HOST`` may be ``[IPv6]``; ``USER:PASSWORD@`` may precede the hosts):

- ``redis://HOST:PORT/DB`` and ``rediss://`` (TLS): one server;
- ``redis+sentinel://HOST:PORT,HOST:PORT/MASTER/DB``: the master the Sentinels name;
- ``redis+cluster://HOST:PORT,HOST:PORT`` and ``rediss+cluster://``: a Redis Cluster.

Query parameters: ``timeout`` (seconds an operation may take, 2 by default),
``prefix`` (of every key, ``sipreg`` by default: registrars with another prefix
share the server without seeing each other's bindings); for TLS, ``ca`` (the
CA file that verifies the server; else the system's) and ``cert`` with ``key``
(a client certificate, for a server that asks for one).

:mod:`.client` reaches the server, :mod:`.codec` says how bindings look in it,
:mod:`.store` is the :class:`~sipreg.store.base.BindingStore`, and :mod:`.auth`
the authentication state the nodes share.
"""

from .auth import KEY_CHECK, RedisAuthState
from .client import MAX_CONNECTIONS, RedisTarget, is_outage, parse_url
from .store import GROUPS, RedisStore, group

__all__ = [
    "GROUPS",
    "KEY_CHECK",
    "MAX_CONNECTIONS",
    "RedisAuthState",
    "RedisStore",
    "RedisTarget",
    "group",
    "is_outage",
    "parse_url",
]
