"""Binding events between registrar nodes sharing one Redis: this node's out, the others' in.

Each node publishes its own events on one channel (``PREFIX:events``), a batch
every :data:`FLUSH_INTERVAL` seconds, and hands the events other nodes publish to
its event streams (``/api/events``), so that the status page of any node shows
every change.  Webhooks and metrics keep to the node's own events: each event is
sent and counted once, by the node that made it.  Redis pub/sub delivers at most
once and keeps nothing: a node that was not subscribed at the time misses the
event (the bindings themselves are in the store; the page reloads them).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from ..errors import StoreUnavailable
from ..registrar.events import BindingEvent
from ..store.redis import RedisStore
from .api import event_json

log = logging.getLogger("sipreg.admin")

#: Seconds between two batches of this node's events on the channel.
FLUSH_INTERVAL = 0.05
#: Events a batch holds at most; more wait for the next.
BATCH = 1000
#: Events waiting to be published at most; past that they are dropped, and counted.
QUEUE = 100_000
#: Seconds before a lost subscription is made again.
RESUBSCRIBE = 1.0

Listener = Callable[[dict[str, Any]], None]


class EventRelay:
    """Publishes ``node``'s events on ``store``'s server; tells listeners the others'."""

    def __init__(self, store: RedisStore, node: str) -> None:
        self.store = store
        self.node = node
        self.channel = f"{store.target.prefix}:events"
        self.dropped = 0
        self._queue: list[dict[str, Any]] = []
        self._listeners: list[Listener] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

    def publish(self, event: BindingEvent) -> None:
        """An events listener: queue this node's ``event`` for the channel."""
        if len(self._queue) >= QUEUE:
            self.dropped += 1
            return
        self._queue.append(event_json(event))

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Tell ``listener`` each event of another node (its JSON, ``node`` in it)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def start(self) -> None:
        """Start publishing and listening; return once subscribed (or the store's timeout)."""
        self._tasks = [
            asyncio.create_task(self._flush()),
            asyncio.create_task(self._subscribe()),
        ]
        with contextlib.suppress(TimeoutError):  # Redis is slow: the stream starts later
            await asyncio.wait_for(self._subscribed.wait(), self.store.target.timeout)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _flush(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            while self._queue:
                batch, self._queue = self._queue[:BATCH], self._queue[BATCH:]
                message = json.dumps({"node": self.node, "events": batch}, separators=(",", ":"))
                try:
                    await self.store.run(functools.partial(self._send, message))
                except StoreUnavailable:  # the store logs the outage; these events are lost
                    self.dropped += len(batch)

    async def _send(self, message: str) -> None:
        await self.store.client.publish(self.channel, message)

    async def _subscribe(self) -> None:
        while True:
            try:
                await self._listen_once()
            except Exception as err:  # an outage (the store logs it) or a lost connection
                log.debug("admin: the event channel: %s", err)
            await asyncio.sleep(RESUBSCRIBE)

    async def _listen_once(self) -> None:
        client, own = self.store.client, None
        if isinstance(client, RedisCluster):  # a message published reaches every node
            node = client.get_random_node()
            port = int(node.port)
            client = own = aioredis.Redis(host=node.host, port=port, **_auth(self.store))
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            self._subscribed.set()
            async for message in pubsub.listen():
                self._deliver(message.get("data"))
        finally:
            await pubsub.aclose()
            if own is not None:
                await own.aclose()

    def _deliver(self, data: Any) -> None:
        try:
            batch = json.loads(data)
            node, events = batch["node"], batch["events"]
        except (TypeError, ValueError, KeyError):
            return
        if node == self.node:
            return
        for event in events:
            event["node"] = node
            for listener in list(self._listeners):
                listener(event)


def _auth(store: RedisStore) -> dict[str, Any]:
    """How ``store`` logs in to its server, for a client of one cluster node."""
    t = store.target
    return {
        "username": t.username, "password": t.password, "ssl": t.tls,
        "ssl_ca_certs": t.ca, "ssl_certfile": t.cert, "ssl_keyfile": t.key,
    }  # fmt: skip
