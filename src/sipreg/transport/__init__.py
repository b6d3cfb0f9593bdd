"""asyncio transports around the sans-I/O core: UDP, and TCP, TLS and WebSocket streams.

:mod:`.base` holds the contract they share: the handler they feed, connection
events, the in-flight bound.  :mod:`.udp` and :mod:`.stream` implement it.
"""
