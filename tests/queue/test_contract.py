"""One contract, every backend: memory, sqlite, redis, postgresql (real servers)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.queue.conftest import Opener
from tests.queue.polling import until
from webtier.exceptions import ConfigError, MessageRejected
from webtier.queue import Depth, Message, Queue, open_queue

pytestmark = pytest.mark.anyio

SHORT = 0.3  # a lease or delay that tests wait out (by polling, with a deadline)
LONG = 60.0  # a lease that never ends during a test


async def test_put_then_get_delivers_the_payload_under_a_lease(queue: Queue) -> None:
    msg_id = await queue.put("jobs", {"to": "ann@example.com", "n": [1, 2.5, None, True]})
    before = time.time()
    message = await queue.get("jobs", lease=LONG)
    assert message is not None
    assert (message.id, message.topic, message.attempt) == (msg_id, "jobs", 1)
    assert message.payload == {"to": "ann@example.com", "n": [1, 2.5, None, True]}
    assert before + LONG - 5 < message.deadline < before + LONG + 5  # the backend's clock: this machine's


async def test_every_json_shape_round_trips(queue: Queue) -> None:
    payloads: list[object] = [None, True, 0, -(2**63), 1e-300, "ключ ✓ \x00", [], {}, {"": {"a": [[]]}}]
    for payload in payloads:
        await queue.put("shapes", payload)
    got = []
    for _ in payloads:
        message = await queue.get("shapes", lease=LONG)
        assert message is not None
        got.append(message.payload)
    assert got == payloads


async def test_empty_topic_gives_none_and_topics_are_independent(queue: Queue) -> None:
    assert await queue.get("a", lease=LONG) is None
    await queue.put("a", 1)
    assert await queue.get("b", lease=LONG) is None
    assert await queue.depth("b") == Depth(0, 0, 0, 0)
    assert await queue.depth("a") == Depth(ready=1, delayed=0, leased=0, dead=0)


async def test_ready_messages_of_a_topic_are_delivered_in_put_order(queue: Queue) -> None:
    ids = [await queue.put("fifo", n) for n in range(30)]
    assert len(set(ids)) == 30
    delivered = []
    while (message := await queue.get("fifo", lease=LONG)) is not None:
        delivered.append((message.id, message.payload))
    assert delivered == list(zip(ids, range(30), strict=True))


async def test_a_released_message_queues_behind_those_already_ready(queue: Queue) -> None:
    for name in "abc":
        await queue.put("order", name)
    first = await queue.get("order", lease=LONG)
    assert first is not None and first.payload == "a"
    assert await queue.release(first)
    order = []
    while (message := await queue.get("order", lease=LONG)) is not None:
        order.append((message.payload, message.attempt))
    assert order == [("b", 1), ("c", 1), ("a", 2)]


async def test_a_lease_hides_the_message_from_other_consumers(opener: Opener) -> None:
    producer = opener()
    await producer.put("jobs", "only")
    taken = await producer.get("jobs", lease=LONG)
    assert taken is not None
    other = producer if opener.kind == "memory" else opener()  # a second client of the same data
    assert await other.get("jobs", lease=LONG) is None
    assert await other.depth("jobs") == Depth(ready=0, delayed=0, leased=1, dead=0)


async def test_an_expired_lease_is_delivered_again_with_attempt_plus_one(queue: Queue) -> None:
    msg_id = await queue.put("jobs", {"x": 1})
    first = await queue.get("jobs", lease=SHORT)
    assert first is not None and first.attempt == 1
    assert await queue.get("jobs", lease=LONG) is None  # still leased
    again = await until(lambda: queue.get("jobs", lease=LONG), what="redelivery")
    assert (again.id, again.attempt, again.payload) == (msg_id, 2, {"x": 1})
    # The first consumer lost its lease: its ack and release change nothing ...
    assert not await queue.ack(first)
    assert not await queue.release(first)
    assert await queue.depth("jobs") == Depth(ready=0, delayed=0, leased=1, dead=0)
    # ... while the current delivery's ack removes the message.
    assert await queue.ack(again)
    assert await queue.depth("jobs") == Depth(0, 0, 0, 0)


async def test_a_lost_lease_can_still_be_acked_until_someone_takes_the_message(queue: Queue) -> None:
    await queue.put("jobs", 1)
    message = await queue.get("jobs", lease=SHORT)
    assert message is not None
    await until(lambda: _is_ready(queue, "jobs"), what="lease end")
    assert await queue.ack(message)
    assert await queue.get("jobs", lease=LONG) is None


async def _is_ready(queue: Queue, topic: str) -> bool:
    return (await queue.depth(topic)).ready == 1


async def test_ack_removes_and_only_once(queue: Queue) -> None:
    await queue.put("jobs", "done")
    message = await queue.get("jobs", lease=LONG)
    assert message is not None
    assert await queue.ack(message)
    assert not await queue.ack(message)
    assert await queue.depth("jobs") == Depth(0, 0, 0, 0)
    assert await queue.get("jobs", lease=LONG) is None


async def test_ack_of_a_message_from_elsewhere_is_refused(queue: Queue) -> None:
    await queue.put("jobs", 1)
    real = await queue.get("jobs", lease=LONG)
    assert real is not None
    assert not await queue.ack(Message("999999", "jobs", 1, 1, 0.0))
    assert not await queue.ack(Message("not-an-id", "jobs", 1, 1, 0.0))
    assert not await queue.ack(Message(real.id, "other", 1, 1, 0.0))
    assert not await queue.ack(Message(real.id, "jobs", 1, 7, 0.0))
    assert await queue.depth("jobs") == Depth(ready=0, delayed=0, leased=1, dead=0)


async def test_release_with_delay_retries_later(queue: Queue) -> None:
    await queue.put("jobs", "retry me")
    message = await queue.get("jobs", lease=LONG)
    assert message is not None
    assert await queue.release(message, delay=SHORT)
    assert await queue.get("jobs", lease=LONG) is None
    assert await queue.depth("jobs") == Depth(ready=0, delayed=1, leased=0, dead=0)
    again = await until(lambda: queue.get("jobs", lease=LONG), what="retry after the delay")
    assert (again.id, again.attempt, again.payload) == (message.id, 2, "retry me")


async def test_release_without_delay_is_ready_at_once(queue: Queue) -> None:
    await queue.put("jobs", 1)
    message = await queue.get("jobs", lease=LONG)
    assert message is not None
    assert await queue.release(message)
    again = await queue.get("jobs", lease=LONG)
    assert again is not None and again.attempt == 2


async def test_a_delayed_put_waits_for_its_time(queue: Queue) -> None:
    await queue.put("later", "b", delay=SHORT)
    await queue.put("later", "a")
    assert await queue.depth("later") == Depth(ready=1, delayed=1, leased=0, dead=0)
    first = await queue.get("later", lease=LONG)
    assert first is not None and first.payload == "a"
    assert await queue.get("later", lease=LONG) is None
    second = await until(lambda: queue.get("later", lease=LONG), what="the delayed message")
    assert second.payload == "b" and second.attempt == 1


async def test_dead_letter_after_max_attempts_of_releases(opener: Opener) -> None:
    queue = opener(max_attempts=2)
    msg_id = await queue.put("jobs", {"bad": True})
    deliveries = []
    for attempt in (1, 2):
        message = await queue.get("jobs", lease=LONG)
        assert message is not None and message.attempt == attempt
        assert await queue.release(message)
        deliveries.append(message)
    assert await queue.get("jobs", lease=LONG) is None
    assert await queue.depth("jobs") == Depth(ready=0, delayed=0, leased=0, dead=1)
    [letter] = await queue.dead("jobs")
    assert (letter.id, letter.topic, letter.payload, letter.attempts) == (msg_id, "jobs", {"bad": True}, 2)
    assert abs(letter.died - time.time()) < 30
    assert not await queue.ack(deliveries[-1])  # a dead message stays dead
    assert not await queue.release(deliveries[-1])


async def test_dead_letter_after_max_attempts_of_expired_leases(opener: Opener) -> None:
    queue = opener(max_attempts=1)
    await queue.put("jobs", "crashes its consumer")
    await queue.put("jobs", "fine")
    taken = await queue.get("jobs", lease=SHORT)
    assert taken is not None and taken.payload == "crashes its consumer"
    await until(lambda: _has_dead(queue, "jobs"), what="burial after the lease ended")
    assert await queue.depth("jobs") == Depth(ready=1, delayed=0, leased=0, dead=1)
    message = await queue.get("jobs", lease=LONG)
    assert message is not None and message.payload == "fine"  # never the dead one
    assert await queue.get("jobs", lease=LONG) is None
    [letter] = await queue.dead("jobs")
    assert letter.payload == "crashes its consumer" and letter.attempts == 1
    assert letter.died == pytest.approx(taken.deadline, abs=0.01)  # it died when its lease ended


async def _has_dead(queue: Queue, topic: str) -> bool:
    return (await queue.depth(topic)).dead == 1


async def test_a_get_skips_a_message_whose_last_lease_expired(opener: Opener) -> None:
    queue = opener(max_attempts=1)
    await queue.put("jobs", "first")
    await queue.put("jobs", "second")
    taken = await queue.get("jobs", lease=SHORT)
    assert taken is not None and taken.payload == "first"
    second = await queue.get("jobs", lease=LONG)
    assert second is not None and second.payload == "second"
    await queue.put("jobs", "third")
    # Once "first"'s lease ends, a get buries it on its way and delivers the next one.
    third = await queue.get("jobs", lease=LONG)
    assert third is not None and third.payload == "third"
    assert await until(lambda: _dead_payloads(queue), what="burial") == ["first"]


async def _dead_payloads(queue: Queue) -> list[object] | None:
    return [letter.payload for letter in await queue.dead("jobs")] or None


async def test_dead_letters_list_oldest_first_up_to_the_limit(opener: Opener) -> None:
    queue = opener(max_attempts=1)
    for n in range(5):
        await queue.put("jobs", n)
    for _ in range(5):
        message = await queue.get("jobs", lease=LONG)
        assert message is not None
        await queue.release(message)
    assert [d.payload for d in await queue.dead("jobs", limit=3)] == [0, 1, 2]
    assert [d.payload for d in await queue.dead("jobs")] == [0, 1, 2, 3, 4]
    assert await queue.dead("jobs", limit=0) == []
    assert await queue.dead("other") == []


async def test_concurrent_consumers_get_every_message_exactly_once(opener: Opener) -> None:
    producers = [opener() for _ in range(2)] if opener.kind != "memory" else [opener()]
    consumers = [opener() for _ in range(2)] if opener.kind != "memory" else producers
    tasks, per_task = 8, 200
    ids: list[str] = []

    async def produce(queue: Queue, start: int) -> None:
        for n in range(start, tasks * per_task, len(producers)):
            ids.append(await queue.put("load", {"n": n}))

    await asyncio.gather(*(produce(q, i) for i, q in enumerate(producers)))
    seen: list[tuple[str, int]] = []

    async def consume(queue: Queue) -> None:
        while (message := await queue.get("load", lease=LONG)) is not None:
            seen.append((message.id, message.payload["n"]))
            assert await queue.ack(message)

    await asyncio.gather(*(consume(consumers[i % len(consumers)]) for i in range(tasks)))
    assert len(seen) == tasks * per_task
    assert sorted(i for i, _ in seen) == sorted(ids)  # every id once: no loss, no duplicate
    assert sorted(n for _, n in seen) == list(range(tasks * per_task))
    assert await consumers[0].depth("load") == Depth(0, 0, 0, 0)


async def test_messages_survive_reopening(durable_opener: Opener) -> None:
    first = durable_opener()
    ids = [await first.put("keep", {"n": n}) for n in range(4)]
    await first.put("keep", "later", delay=3600)
    taken = await first.get("keep", lease=LONG)
    assert taken is not None and taken.id == ids[0]
    done = await first.get("keep", lease=LONG)
    assert done is not None and await first.ack(done)
    await first.close()

    second = durable_opener()
    assert await second.depth("keep") == Depth(ready=2, delayed=1, leased=1, dead=0)
    rest = [await second.get("keep", lease=LONG) for _ in range(3)]
    assert [m.id if m else None for m in rest] == [ids[2], ids[3], None]
    assert await second.ack(taken)  # a delivery from before the reopen is still valid


@pytest.mark.parametrize("topic", ["", "a b", "../etc", "x" * 65, "ключ", "a{b}"])
async def test_bad_topics_are_rejected_everywhere(queue: Queue, topic: str) -> None:
    with pytest.raises(MessageRejected, match="bad topic"):
        await queue.put(topic, 1)
    with pytest.raises(MessageRejected, match="bad topic"):
        await queue.get(topic, lease=LONG)
    with pytest.raises(MessageRejected, match="bad topic"):
        await queue.depth(topic)


async def test_non_json_and_oversize_payloads_are_rejected_and_nothing_is_stored(opener: Opener) -> None:
    queue = opener(max_payload=1024)
    with pytest.raises(MessageRejected, match="set, which is not JSON"):
        await queue.put("jobs", {"tags": {"a", "b"}})
    with pytest.raises(MessageRejected, match="bytes, which is not JSON"):
        await queue.put("jobs", b"raw")
    with pytest.raises(MessageRejected, match="1027 bytes as JSON, over the queue's limit of 1024 bytes"):
        await queue.put("jobs", "x" * 1025)
    with pytest.raises(MessageRejected, match="delay"):
        await queue.put("jobs", 1, delay=-1)
    with pytest.raises(MessageRejected, match="lease"):
        await queue.get("jobs", lease=0)
    assert await queue.depth("jobs") == Depth(0, 0, 0, 0)
    await queue.put("jobs", "x" * 1022)  # exactly at the limit
    assert (await queue.depth("jobs")).ready == 1


async def test_unknown_urls_and_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown queue scheme"):
        open_queue("ftp://x")
    with pytest.raises(ConfigError, match="no scheme"):
        open_queue("jobs.db")
    with pytest.raises(ConfigError, match="bad SQLite URL"):
        open_queue("sqlite://relative.db")
    with pytest.raises(ConfigError, match="bad option"):
        open_queue("memory://", colour="blue")
    with pytest.raises(ConfigError, match="max_attempts"):
        open_queue("memory://", max_attempts=0)
