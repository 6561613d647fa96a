"""`webtier status` in the terminal: the admin status as a rich table, with rates between refreshes."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

__all__ = ["StatusView"]


class StatusView:
    """Renders one status document; remembers the previous one to show requests per second."""

    def __init__(self) -> None:
        self._previous: tuple[float, dict[str, int], int] | None = None

    def render(self, data: dict[str, Any]) -> Group:
        now = time.monotonic()
        workers = data.get("workers", [])
        counts = {str(w.get("id")): int(w.get("requests", 0) or 0) for w in workers}
        total = int((data.get("responses") or {}).get("total", 0))
        rates: dict[str, float] = {}
        overall = 0.0
        if self._previous is not None and now > self._previous[0]:
            elapsed = now - self._previous[0]
            rates = {k: max(0.0, (v - self._previous[1].get(k, v)) / elapsed) for k, v in counts.items()}
            overall = max(0.0, (total - self._previous[2]) / elapsed)
        self._previous = (now, counts, total)

        table = Table(title=f"webtier {data.get('mode', 'balance')} · store {data.get('store', '-')}")
        for column in ("worker", "url", "state", "in flight", "requests", "req/s", "cpu %", "pid"):
            table.add_column(
                column, justify="right" if column in ("in flight", "requests", "req/s", "cpu %") else "left"
            )
        for worker in workers:
            worker_id = str(worker.get("id"))
            state = str(worker.get("state"))
            table.add_row(
                worker_id,
                str(worker.get("url", "")),
                Text(state, style="green" if state in ("ready", "healthy") else "yellow"),
                str(worker.get("inflight", "")),
                str(worker.get("requests", "")),
                f"{rates[worker_id]:.0f}" if worker_id in rates else "-",
                str(worker.get("cpu_percent", "")),
                str(worker.get("pid", "")),
            )
        lines: list[Any] = [table]
        latency = data.get("latency") or {}
        lines.append(
            Text(
                f"responses {total}  ({overall:.0f}/s)   p50 {float(latency.get('p50', 0)) * 1000:.1f} ms   "
                f"p99 {float(latency.get('p99', 0)) * 1000:.1f} ms   daily users {data.get('daily_active_users', '-')}"
            )
        )
        scale = data.get("autoscale")
        if scale:
            lines.append(
                Text(
                    f"autoscale: {scale['metric']} target {scale['target']} per worker, "
                    f"{scale['min_workers']}..{scale['max_workers']} workers, desired {scale['desired']}"
                )
            )
        for decision in reversed((data.get("decisions") or [])[-3:]):
            lines.append(Text(f"  {decision.get('reason', '')}", style="dim"))
        return Group(*lines)
