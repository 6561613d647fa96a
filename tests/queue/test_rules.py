"""The queue's pure rules: no event loop, no I/O."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import math
import re
import uuid

import orjson
import pytest

from webtier.exceptions import ConfigError, MessageRejected
from webtier.queue.rules import (
    Backoff,
    Limits,
    PollBackoff,
    State,
    check_delay,
    check_lease,
    check_topic,
    decode_payload,
    encode_payload,
    state_after_delivery,
)


@pytest.mark.parametrize("topic", ["a", "jobs", "mail.send", "v2_resize-images", "A" * 64, "0"])
def test_good_topics_pass(topic: str) -> None:
    assert check_topic(topic) == topic


@pytest.mark.parametrize(
    "topic", ["", "a b", "a/b", "a:b", "{a}", "*", "A" * 65, "é", "a\n", "a\x00", None, 1, b"jobs", ["a"]]
)
def test_bad_topics_are_rejected_with_the_rule(topic: object) -> None:
    with pytest.raises(MessageRejected, match=re.escape("A-Z a-z 0-9 _ . -")):
        check_topic(topic)


@pytest.mark.parametrize(
    "payload",
    [
        None,
        True,
        0,
        -(2**63),
        2**64 - 1,
        1.5,
        "",
        "ключ ✓ \x00",
        [],
        {},
        {"a": [1, {"b": None, "c": [True, 2.5, "x"]}], "": "empty key"},
        [[[[[[[[[[]]]]]]]]]],
    ],
)
def test_json_payloads_round_trip(payload: object) -> None:
    data = encode_payload(payload, 1 << 20)
    assert isinstance(data, bytes)
    assert decode_payload(data) == payload


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int


class MyStr(str):
    pass


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ({1, 2}, "set"),
        (b"bytes", "bytes"),
        ((1, 2), "tuple"),
        (datetime.datetime(2024, 1, 1), "datetime"),
        (decimal.Decimal("1.5"), "Decimal"),
        (uuid.UUID(int=1), "UUID"),
        (Color.RED, "Color"),
        (Point(1), "Point"),
        (MyStr("x"), "MyStr"),
        (object(), "object"),
        ({"nested": [1, {"deep": {1, 2}}]}, "set"),
        ({1: "int key"}, "int key"),
        ({("a",): 1}, "tuple key"),
        (math.nan, "nan"),
        ([math.inf], "inf"),
    ],
)
def test_non_json_payloads_are_rejected_naming_the_type(payload: object, named: str) -> None:
    with pytest.raises(MessageRejected, match=named):
        encode_payload(payload, 1 << 20)


def test_unencodable_values_are_rejected() -> None:
    with pytest.raises(MessageRejected, match="cannot be encoded"):
        encode_payload(2**64, 1 << 20)
    with pytest.raises(MessageRejected, match="cannot be encoded"):
        encode_payload("lone \ud800 surrogate", 1 << 20)


def test_deep_nesting_is_rejected() -> None:
    payload: list[object] = []
    for _ in range(200):
        payload = [payload]
    with pytest.raises(MessageRejected, match="deeper than"):
        encode_payload(payload, 1 << 20)


def test_size_cap_is_on_the_encoded_bytes_and_inclusive() -> None:
    exact = "x" * 98  # encodes as 100 bytes with its quotes
    assert len(encode_payload(exact, 100)) == 100
    with pytest.raises(MessageRejected, match=r"101 bytes as JSON, over the queue's limit of 100 bytes"):
        encode_payload(exact + "x", 100)


def test_payload_is_plain_json_text() -> None:
    assert orjson.loads(encode_payload({"b": 1, "a": [None]}, 100)) == {"b": 1, "a": [None]}


@pytest.mark.parametrize("value", [0.001, 1, 30.0, 365 * 86_400])
def test_good_leases(value: float) -> None:
    assert check_lease(value) == float(value)


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, 365 * 86_400 + 1, "1", None, True])
def test_bad_leases(value: object) -> None:
    with pytest.raises(MessageRejected, match="lease"):
        check_lease(value)


def test_delay_may_be_zero_but_not_negative() -> None:
    assert check_delay(0) == 0.0
    with pytest.raises(MessageRejected, match="delay must be at least 0"):
        check_delay(-0.5)
    with pytest.raises(MessageRejected, match="delay must be a finite number"):
        check_delay(math.nan)


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "state"),
    [(0, 1, State.WAITING), (1, 1, State.DEAD), (1, 3, State.WAITING), (2, 3, State.WAITING), (3, 3, State.DEAD)],
)
def test_state_after_a_delivery_that_was_not_acknowledged(attempts: int, max_attempts: int, state: State) -> None:
    assert state_after_delivery(attempts, max_attempts) is state


@pytest.mark.parametrize(
    "bad", [{"max_attempts": 0}, {"max_attempts": 1.5}, {"max_attempts": True}, {"max_payload": 8}]
)
def test_limits_are_validated_on_creation(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Limits(**bad)  # type: ignore[arg-type]


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=10.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.delay(10_000) == 10.0  # no overflow for absurd attempt counts


def test_backoff_jitter_only_shortens_within_its_fraction() -> None:
    backoff = Backoff(base=4.0, factor=2.0, cap=100.0, jitter=0.25)
    assert backoff.delay(1, 0.0) == 4.0
    assert backoff.delay(1, 0.5) == 3.5
    assert backoff.delay(1, 0.999999) == pytest.approx(3.0, abs=1e-5)


@pytest.mark.parametrize("bad", [{"base": -1.0}, {"base": 5.0, "cap": 1.0}, {"factor": 0.5}, {"jitter": 1.5}])
def test_backoff_is_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Backoff(**bad)


def test_poll_backoff_doubles_and_is_bounded() -> None:
    poll = PollBackoff(first=0.05, most=0.3)
    assert [poll.delay(n) for n in range(1, 6)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    assert poll.delay(10_000) == 0.3
    with pytest.raises(ConfigError):
        PollBackoff(first=0, most=1)
