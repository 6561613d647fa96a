"""The autoscale loop against a stand-in supervisor: what it asks for, and when it keeps quiet."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from webtier.autoscale.loop import run_autoscaler
from webtier.autoscale.policy import Decision, ScalePolicy
from webtier.pool.supervisor import Supervisor

pytestmark = pytest.mark.anyio


@dataclass
class _Backends:
    members: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Supervisor:
    """No ready worker, one below the minimum: a live supervisor must be told to scale up."""

    stopping: bool
    ready: list[Any] = field(default_factory=list)
    active: list[Any] = field(default_factory=list)
    backends: _Backends = field(default_factory=_Backends)
    commands: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    requested: list[tuple[str, Any]] = field(default_factory=list)

    def request(self, command: str, argument: Any = None) -> None:
        self.requested.append((command, argument))


async def _run(supervisor: _Supervisor, seconds: float) -> list[Decision]:
    decisions: list[Decision] = []
    policy = ScalePolicy(min_workers=1, max_workers=4)
    task = asyncio.create_task(
        run_autoscaler(cast(Supervisor, supervisor), policy, interval=0.2, on_decision=decisions.append)
    )
    await asyncio.sleep(seconds)  # the span under test: several decision intervals
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return decisions


async def test_a_pool_below_its_minimum_is_scaled_up() -> None:
    supervisor = _Supervisor(stopping=False)
    decisions = await _run(supervisor, 0.5)
    assert decisions and decisions[0].desired == 1
    assert ("scale", 1) in supervisor.requested


async def test_a_stopping_pool_is_left_alone() -> None:
    supervisor = _Supervisor(stopping=True)
    assert await _run(supervisor, 0.5) == []
    assert supervisor.requested == []
