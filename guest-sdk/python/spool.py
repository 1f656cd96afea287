"""Write Spool plugins in Python: one decorated function per plugin.

A Spool plugin is a WebAssembly component implementing a world of ``wit/spool.wit``.
componentize-py turns a Python module into one; it generates the ``wit_world`` bindings and
expects the module to define a ``WitWorld`` class. This module hides both: decorate a function
with :func:`handler` (world ``handler``) or :func:`filter` (world ``filter``) and it defines
``WitWorld`` in your module for you::

    import spool

    @spool.handler
    def handle(msg: spool.Message):
        order = msg.json()
        if order.get("amount", 0) > 1000:
            spool.publish("orders.review", {"id": order["id"]})
        spool.log.info(f"order {order['id']}")
        return spool.ack()

Build it (componentize-py 0.25.1, ``pip install componentize-py==0.25.1``)::

    componentize-py -d spool.wit -w handler componentize app -p . -o handler.wasm

An exception that escapes the function traps the plugin: that message fails with category
``trap`` and is retried with the queue's backoff (then dead-lettered), like any failure.
"""

import json as _json
import sys as _sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from componentize_py_types import Err as _Err
from wit_world.imports import host as _host
from wit_world.imports import types as _types

__all__ = [
    "Message", "SpoolError", "handler", "filter", "ack", "retry", "dead_letter",
    "deliver", "drop", "transform", "publish", "heartbeat", "config", "log", "kv",
]

Payload = Union[bytes, bytearray, str, dict, list]
Headers = Union[Dict[str, str], Iterable[Tuple[str, str]], None]


class SpoolError(Exception):
    """A host call refused or failed (e.g. no route for a topic, a filter calling publish)."""


class Message:
    """One message as the plugin sees it.

    Attributes: ``id`` (stable across redeliveries), ``queue``, ``topic`` (or None), ``payload``
    (bytes), ``headers`` (dict; the first value wins when a name repeats), ``header_list`` (the
    pairs as sent), ``attempt`` (1 on the first delivery), ``correlation_id`` and
    ``enqueued_at`` (Unix milliseconds).
    """

    __slots__ = ("id", "queue", "topic", "payload", "header_list", "headers", "attempt",
                 "correlation_id", "enqueued_at")

    def __init__(self, raw: "_types.Message"):
        self.id: str = raw.id
        self.queue: str = raw.queue
        self.topic: Optional[str] = raw.topic
        self.payload: bytes = bytes(raw.payload)
        self.header_list: List[Tuple[str, str]] = list(raw.headers)
        self.headers: Dict[str, str] = {}
        for name, value in self.header_list:
            self.headers.setdefault(name, value)
        self.attempt: int = raw.attempt
        self.correlation_id: Optional[str] = raw.correlation_id
        self.enqueued_at: int = raw.enqueued_at

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (invalid bytes become U+FFFD)."""
        return self.payload.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The payload parsed as JSON; raises ``ValueError`` when it is not JSON."""
        return _json.loads(self.payload)

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first header called ``name``, compared case-insensitively."""
        wanted = name.lower()
        for key, value in self.header_list:
            if key.lower() == wanted:
                return value
        return default

    def __repr__(self) -> str:
        return f"Message(id={self.id!r}, queue={self.queue!r}, attempt={self.attempt})"


# Outcomes of a handler.

def ack() -> "_types.Outcome":
    """Done: the message is acknowledged and never delivered again."""
    return _types.Outcome_Ack()


def retry(delay_ms: Optional[int] = None) -> "_types.Outcome":
    """Try again after ``delay_ms`` milliseconds, or the queue's backoff when None."""
    return _types.Outcome_Retry(None if delay_ms is None else int(delay_ms))


def dead_letter(reason: str) -> "_types.Outcome":
    """Give up now: the message goes to the dead-letter queue with ``reason``."""
    return _types.Outcome_DeadLetter(str(reason))


# Decisions of a filter.

def deliver(queues: Iterable[str] = ()) -> "_types.Route":
    """Deliver unchanged to ``queues``; no queues means the route's own queue."""
    return _types.Route_Deliver(list(queues))


def drop() -> "_types.Route":
    """Deliver nowhere."""
    return _types.Route_Drop()


def transform(payload: Payload, headers: Headers = None,
              queues: Iterable[str] = ()) -> "_types.Route":
    """Deliver a rewritten message (payload as for :func:`publish`) to ``queues``."""
    return _types.Route_Transform(
        _types.Transformed(list(queues), _to_bytes(payload), _to_pairs(headers)))


# Host calls.

def publish(topic: str, payload: Payload, headers: Headers = None) -> str:
    """Publish to ``topic`` through the router; returns the new message's id.

    ``payload`` may be bytes, str (sent as UTF-8) or a dict/list (sent as JSON). The message is
    written together with this handler's ack and never otherwise. Raises :class:`SpoolError`.
    """
    try:
        return _host.publish(topic, _to_bytes(payload), _to_pairs(headers))
    except _Err as e:
        raise SpoolError(f"publish to {topic}: {e.value}") from None


def heartbeat() -> None:
    """Tell the host the handler is still working, extending the message's lease."""
    _host.heartbeat()


def config(key: str, default: Optional[str] = None) -> Optional[str]:
    """A value of ``[plugins.NAME.config]`` in spool.toml, or ``default``."""
    value = _host.config(key)
    return default if value is None else value


class log:
    """Lines in the host's log, tagged with the plugin, its version and the message id."""

    @staticmethod
    def trace(message: str) -> None:
        _host.log(_types.Level.TRACE, str(message))

    @staticmethod
    def debug(message: str) -> None:
        _host.log(_types.Level.DEBUG, str(message))

    @staticmethod
    def info(message: str) -> None:
        _host.log(_types.Level.INFO, str(message))

    @staticmethod
    def warn(message: str) -> None:
        _host.log(_types.Level.WARN, str(message))

    @staticmethod
    def error(message: str) -> None:
        _host.log(_types.Level.ERROR, str(message))


class kv:
    """A small key-value store private to this plugin, shared by all its versions."""

    @staticmethod
    def get(key: str) -> Optional[bytes]:
        """The value stored under ``key``, or None."""
        try:
            value = _host.kv_get(key)
        except _Err as e:
            raise SpoolError(f"kv get {key}: {e.value}") from None
        return None if value is None else bytes(value)

    @staticmethod
    def set(key: str, value: Payload) -> None:
        """Store ``value`` (as for :func:`publish`) under ``key``; durable once it returns."""
        try:
            _host.kv_set(key, _to_bytes(value))
        except _Err as e:
            raise SpoolError(f"kv set {key}: {e.value}") from None

    @staticmethod
    def delete(key: str) -> None:
        """Remove ``key`` (no error when it is absent)."""
        try:
            _host.kv_delete(key)
        except _Err as e:
            raise SpoolError(f"kv delete {key}: {e.value}") from None


# Making a function the plugin's export.

def handler(function: Callable[[Message], "_types.Outcome"]) -> Callable:
    """Make ``function(msg) -> outcome`` the plugin's handler (world ``handler``).

    Defines ``WitWorld`` in the function's module, which is what componentize-py exports. A
    function that returns None acknowledges the message.
    """
    class WitWorld:
        def handle(self, message: "_types.Message") -> "_types.Outcome":
            outcome = function(Message(message))
            return _types.Outcome_Ack() if outcome is None else outcome

    _export(function, WitWorld)
    return function


def filter(function: Callable[[Message], "_types.Route"]) -> Callable:  # noqa: A001
    """Make ``function(msg) -> route`` the plugin's routing filter (world ``filter``).

    Defines ``WitWorld`` in the function's module. A function that returns None delivers the
    message unchanged to the route's queue.
    """
    class WitWorld:
        def route(self, message: "_types.Message") -> "_types.Route":
            decision = function(Message(message))
            return _types.Route_Deliver([]) if decision is None else decision

    _export(function, WitWorld)
    return function


def _export(function: Callable, world: type) -> None:
    # componentize-py looks up `WitWorld` in the app module; setting it there lets the user's
    # module consist of the decorated function alone.
    world.__qualname__ = world.__name__ = "WitWorld"
    setattr(_sys.modules[function.__module__], "WitWorld", world)
    _warm_up()


def _warm_up() -> None:
    """Run this module's own per-message code a few times, without the user's function.

    componentize-py snapshots the interpreter after importing the app, at build time; every
    instance starts from that snapshot. Code that has run there starts specialised, its caches
    filled, instead of doing that work (and dirtying the memory pages it takes) again in every
    fresh instance.
    """
    raw = _types.Message(
        id="warm-up", queue="warm-up", topic="warm.up",
        payload=b'{"id": 1, "items": [1.5, "two", {"three": null, "four": true}]}',
        headers=[("k", "v"), ("K", "w")], attempt=1, correlation_id=None, enqueued_at=0)
    # CPython specialises an instruction after it has run a few times (8 in 3.14).
    for _ in range(16):
        msg = Message(raw)
        msg.json()
        _ = msg.text
        msg.header("k")
        _to_bytes({"id": 1, "items": [1.5, "two", None, True]})
        _to_bytes("text")
        _to_pairs({"k": "v"})
        _to_pairs([("k", "v")])
        ack()
        retry(None)
        retry(1)
        dead_letter("reason")
        deliver(["q"])
        drop()
        transform({"id": 1}, {"k": "v"}, ["q"])


def _to_bytes(payload: Payload) -> bytes:
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return _json.dumps(payload, separators=(",", ":")).encode("utf-8")


def _to_pairs(headers: Headers) -> List[Tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(str(k), str(v)) for k, v in items]
