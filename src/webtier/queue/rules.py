"""The queue's decisions, without I/O: names, payloads, a message's life, retry and poll timing.

Every backend applies the same rules; the SQL and Lua backends restate them in their own
language (they must run inside one transaction or script), and the contract suite checks that
they agree with this module, which the memory backend calls directly.

A message's life, as a table of transitions (``attempts`` counts deliveries so far)::

    event                 from                to
    put(delay=0)          -                   ready
    put(delay>0)          -                   delayed         (ready once its time comes)
    get                   ready               leased          attempts + 1, until now + lease
    ack                   leased              (deleted)
    release(delay)        leased              ready/delayed   if attempts < max_attempts
    release(delay)        leased              dead            otherwise
    lease expires         leased              ready           if attempts < max_attempts
    lease expires         leased              dead            otherwise

A delivery is identified by ``(id, attempt)``: ``ack`` and ``release`` act only while the
message has not been delivered again since (nor buried), so a consumer whose lease ran out
cannot delete or reschedule the delivery another consumer is now working on.

Ordering: ready messages of one topic are delivered by the time they became ready (the put
time, the end of a delay, or the end of an expired lease), ties by id.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from webtier.exceptions import ConfigError, MessageRejected

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_PAYLOAD",
    "Backoff",
    "Limits",
    "PollBackoff",
    "State",
    "check_delay",
    "check_lease",
    "check_topic",
    "decode_payload",
    "encode_payload",
    "state_after_delivery",
]

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_MAX_PAYLOAD = 256 * 1024
_TOPIC = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Nesting deeper than this is refused before orjson would (its limit is 254 levels).
_MAX_DEPTH = 128
# A lease or delay longer than a year is a unit mistake (milliseconds for seconds), not a plan.
_MAX_SECONDS = 365 * 86_400.0

# orjson would turn dataclasses, datetimes, enums, UUIDs and tuples into something else; a payload
# must come back as it went in, so _check_json admits only the plain JSON types below.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
_SCALARS = (str, int, bool, type(None))


class State(Enum):
    """Where a message is; the memory backend stores it, SQL stores ``value``."""

    WAITING = 0  # ready, or delayed until its time
    LEASED = 1
    DEAD = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Per-queue limits, validated on creation."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_payload: int = DEFAULT_MAX_PAYLOAD

    def __post_init__(self) -> None:
        if type(self.max_attempts) is not int or not 1 <= self.max_attempts <= 1000:
            raise ConfigError(f"max_attempts must be an integer from 1 to 1000, not {self.max_attempts!r}")
        if type(self.max_payload) is not int or not 16 <= self.max_payload <= 64 * 1024 * 1024:
            raise ConfigError(f"max_payload must be an integer from 16 to 67108864 bytes, not {self.max_payload!r}")


def state_after_delivery(attempts: int, max_attempts: int) -> State:
    """Where a delivered message goes when its lease ends unacknowledged (released or expired)."""
    return State.WAITING if attempts < max_attempts else State.DEAD


def check_topic(topic: object) -> str:
    """``topic`` if it is 1-64 characters of ``A-Z a-z 0-9 _ . -``; else :class:`MessageRejected`."""
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
        raise MessageRejected(f"bad topic {topic!r}: use 1 to 64 characters from A-Z a-z 0-9 _ . -")
    return topic


def _seconds(value: object, what: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MessageRejected(f"{what} must be a finite number of seconds, not {value!r}")
    low_ok = value > 0 if positive else value >= 0
    if not low_ok or value > _MAX_SECONDS:
        bound = "above 0" if positive else "at least 0"
        raise MessageRejected(f"{what} must be {bound} and at most {_MAX_SECONDS:.0f} seconds, not {value!r}")
    return float(value)


def check_lease(lease: object) -> float:
    return _seconds(lease, "lease", positive=True)


def check_delay(delay: object) -> float:
    return _seconds(delay, "delay", positive=False)


def _check_json(payload: Any) -> None:
    """Refuse anything that would not come back from JSON as it went in."""
    stack: list[tuple[Any, int]] = [(payload, 0)]
    while stack:
        value, depth = stack.pop()
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind is float:
            if not math.isfinite(value):
                raise MessageRejected(f"payload holds {value!r}, which JSON cannot represent")
            continue
        if depth >= _MAX_DEPTH:
            raise MessageRejected(f"payload nests deeper than {_MAX_DEPTH} levels")
        if kind is list:
            stack.extend((item, depth + 1) for item in value)
        elif kind is dict:
            for key, item in value.items():
                if type(key) is not str:
                    raise MessageRejected(f"payload has a {type(key).__name__} key {key!r}; JSON keys are strings")
                stack.append((item, depth + 1))
        else:
            raise MessageRejected(
                f"payload holds {kind.__name__}, which is not JSON "
                "(use dict, list, str, int, float, bool or None; never pickle)"
            )


def encode_payload(payload: Any, max_bytes: int) -> bytes:
    """JSON bytes of ``payload``; :class:`MessageRejected` if it is not plain JSON or too large."""
    _check_json(payload)
    try:
        data = orjson.dumps(payload, option=_OPTIONS)
    except TypeError as exc:  # integers beyond 64 bits, strings with lone surrogates
        raise MessageRejected(f"payload cannot be encoded as JSON: {exc}") from None
    if len(data) > max_bytes:
        raise MessageRejected(f"payload is {len(data)} bytes as JSON, over the queue's limit of {max_bytes} bytes")
    return data


def decode_payload(data: bytes) -> Any:
    return orjson.loads(data)


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Retry delay after a failed attempt: exponential, capped, with optional jitter.

    ``delay(attempt, rand)`` for the ``attempt``-th failed delivery (1-based); ``rand`` is a
    number in [0, 1) supplied by the caller (this module draws no randomness), and ``jitter``
    the fraction of the delay it may remove, so retries of many messages spread out.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not (0 <= self.base <= self.cap <= _MAX_SECONDS):
            raise ConfigError(f"backoff needs 0 <= base <= cap <= {_MAX_SECONDS:.0f}, not {self.base}, {self.cap}")
        if not self.factor >= 1:
            raise ConfigError(f"backoff factor must be at least 1, not {self.factor!r}")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"backoff jitter must be from 0 to 1, not {self.jitter!r}")

    def delay(self, attempt: int, rand: float = 0.0) -> float:
        exponent = min(max(attempt - 1, 0), 64)  # 2**64 seconds is past any cap already
        full = min(self.cap, self.base * self.factor**exponent)
        return full * (1.0 - self.jitter * rand)


@dataclass(frozen=True, slots=True, kw_only=True)
class PollBackoff:
    """How long a consumer waits after ``empty`` consecutive empty polls: doubling, bounded."""

    first: float = 0.05
    most: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.most <= 60:
            raise ConfigError(f"poll backoff needs 0 < first <= most <= 60, not {self.first}, {self.most}")

    def delay(self, empty: int) -> float:
        return min(self.most, self.first * 2.0 ** min(max(empty - 1, 0), 32))
