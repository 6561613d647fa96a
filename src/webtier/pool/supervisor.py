"""The supervisor: runs worker processes behind the balancer.

Signal discipline as in gunicorn's arbiter: signal handlers and the admin API
only *enqueue* commands; one loop (:meth:`Supervisor.run`) carries them out,
one at a time, so a reload never races a scale-in. A worker joins the balancer
only after it answers ``/healthz`` and leaves it drained (no new requests, in
flight ones finished) before it is stopped. A worker that crashes is replaced
with exponential backoff; one whose heartbeat stops (a hung event loop) gets
SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from webtier.balancer.backends import BackendSet
from webtier.balancer.config import BackendAddress
from webtier.config import WorkerSettings

__all__ = ["PoolConfig", "Supervisor", "Worker"]

log = logging.getLogger("webtier.pool")

Listener = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolConfig:
    worker: WorkerSettings  # template: id, port and heartbeat are filled in per worker
    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    heartbeat_timeout: float = 10.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    stable_after: float = 30.0  # a worker alive this long resets the crash backoff


@dataclass(eq=False)
class Worker:
    id: str
    port: int
    proc: asyncio.subprocess.Process
    state: str = "starting"  # starting -> ready -> draining -> stopping -> exited
    started: float = field(default_factory=time.monotonic)
    last_beat: float = field(default_factory=time.monotonic)
    stats: dict[str, Any] = field(default_factory=dict)
    cpu_percent: float = 0.0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": f"http://127.0.0.1:{self.port}",
            "state": self.state,
            "pid": self.proc.pid,
            "uptime": round(time.monotonic() - self.started, 1),
            "served": self.stats.get("requests", 0),  # as the worker counts them (heartbeat, ~0.5 s old)
            "cpu_percent": round(self.cpu_percent, 1),
            "p95": self.stats.get("p95", 0.0),
            "rss_kib": self.stats.get("rss_kib", 0),
        }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _answers_healthz(port: int) -> bool:
    writer = None
    try:
        async with asyncio.timeout(1.0):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            line = await reader.readline()
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
    return line.startswith(b"HTTP/1.1 200")


class Supervisor:
    def __init__(self, config: PoolConfig, backends: BackendSet, listener: Listener | None = None) -> None:
        self.config = config
        self.backends = backends
        self.workers: dict[str, Worker] = {}
        self.commands: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.target = 0
        self.crashes = 0
        self._ids = itertools.count(1)
        self._listener = listener or (lambda kind, data: None)
        self._stopping = False
        self._background: set[asyncio.Task[None]] = set()
        self.started = asyncio.Event()  # set once the initial workers are up (or failed to come up)
        self.day = time.strftime("%Y-%m-%d")
        self.users_today: set[str] = set()  # distinct users served today (short hashes): the DAU

    @property
    def stopping(self) -> bool:
        """Shutting down: every worker is going, and none is replaced."""
        return self._stopping

    # -- what the outside may call: enqueue only --------------------------------------------------

    def request(self, command: str, argument: Any = None) -> None:
        """Queue ``scale`` (argument: count), ``reload`` or ``stop``; safe from signal handlers."""
        self.commands.put_nowait((command, argument))

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.request, "reload")
        loop.add_signal_handler(signal.SIGTERM, self.request, "stop")
        loop.add_signal_handler(signal.SIGINT, self.request, "stop")

    @property
    def active(self) -> list[Worker]:
        """Workers that are serving or about to: what a scale decision counts."""
        return [w for w in self.workers.values() if w.state in ("starting", "ready")]

    @property
    def ready(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.state == "ready"]

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for worker in self.workers.values():
            row = worker.as_dict()
            member = self.backends.members.get(worker.id)
            row["inflight"] = member.backend.inflight if member is not None else 0
            row["requests"] = member.requests if member is not None else 0  # answered through the balancer
            rows.append(row)
        return rows

    # -- the one loop that acts -------------------------------------------------------------------

    async def run(self, initial: int) -> None:
        """Start ``initial`` workers, then carry out commands until ``stop``."""
        self.target = initial
        watchdog = asyncio.create_task(self._watch())
        try:
            try:
                await self._scale(initial)
            finally:
                self.started.set()
            while True:
                command, argument = await self.commands.get()
                if command == "stop":
                    break
                if command == "scale":
                    self.target = int(argument)
                    await self._scale(self.target)
                elif command == "reload":
                    await self._reload()
        finally:
            watchdog.cancel()
            await self._shutdown()

    async def _scale(self, count: int) -> None:
        missing = count - len(self.active)
        if missing > 0:
            await asyncio.gather(*(self._start() for _ in range(missing)))
        elif missing < 0:
            # Scale in: the least busy workers go, each drained first.
            victims = sorted(self.ready, key=self._inflight)[:-missing]
            await asyncio.gather(*(self._stop(w) for w in victims))

    def _inflight(self, worker: Worker) -> int:
        member = self.backends.members.get(worker.id)
        return member.backend.inflight if member is not None else 0

    async def _reload(self) -> None:
        """Rolling restart: for each old worker, start a new one, wait until ready, then drain the old."""
        old = list(self.ready)
        self._listener("reload", {"workers": [w.id for w in old]})
        for worker in old:
            new = await self._start()
            if new is None:
                log.error("rolling reload stopped: a new worker did not become ready")
                return
            await self._stop(worker)
        self._listener("reloaded", {"workers": [w.id for w in self.ready]})

    # -- one worker's life ----------------------------------------------------------------------

    async def _start(self) -> Worker | None:
        worker_id = f"w{next(self._ids)}"
        port = _free_port()
        read_fd, write_fd = os.pipe()
        settings = replace(self.config.worker, worker_id=worker_id, port=port, heartbeat_fd=write_fd)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "webtier.pool.worker",
                env={**os.environ, **settings.to_env()},
                pass_fds=(write_fd,),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            os.close(write_fd)
        worker = Worker(worker_id, port, proc)
        self.workers[worker_id] = worker
        worker.tasks.append(asyncio.create_task(self._read_heartbeats(worker, read_fd)))
        worker.tasks.append(asyncio.create_task(self._reap(worker)))
        self._listener("worker_starting", {"id": worker_id, "pid": proc.pid, "port": port})
        deadline = time.monotonic() + self.config.start_timeout
        while time.monotonic() < deadline and proc.returncode is None and worker.state == "starting":
            if await _answers_healthz(port):
                self.backends.add(BackendAddress(worker_id, "127.0.0.1", port), ready=True)
                worker.state = "ready"
                self._listener("worker_ready", {"id": worker_id, "pid": proc.pid, "port": port})
                return worker
            await asyncio.sleep(0.05)
        if worker.state == "starting" and proc.returncode is None:
            log.error("worker %s did not answer /healthz within %.0f s", worker_id, self.config.start_timeout)
            await self._terminate(worker)
        # A worker that exited while starting is the reaper's: it counts a crash and replaces it with backoff.
        return None

    async def _stop(self, worker: Worker) -> None:
        if worker.state not in ("starting", "ready"):
            return
        worker.state = "draining"
        self._listener("worker_draining", {"id": worker.id})
        if worker.id in self.backends.members:
            await self.backends.drain(worker.id)
        await self._terminate(worker)

    async def _terminate(self, worker: Worker) -> None:
        worker.state = "stopping"
        if worker.id in self.backends.members:
            self.backends.remove(worker.id)
        if worker.proc.returncode is None:
            worker.proc.terminate()
            try:
                await asyncio.wait_for(worker.proc.wait(), self.config.stop_timeout)
            except TimeoutError:
                log.warning("worker %s ignored SIGTERM for %.0f s: SIGKILL", worker.id, self.config.stop_timeout)
                worker.proc.kill()
                await worker.proc.wait()

    async def _reap(self, worker: Worker) -> None:
        """Wait for the process to end; an end nobody asked for is a crash, replaced with backoff."""
        code = await worker.proc.wait()
        expected = worker.state in ("draining", "stopping")
        worker.state = "exited"
        self.workers.pop(worker.id, None)
        if worker.id in self.backends.members:
            self.backends.remove(worker.id)
        for task in worker.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if expected or self._stopping:
            self._listener("worker_stopped", {"id": worker.id, "code": code})
            return
        lived = time.monotonic() - worker.started
        self.crashes = 0 if lived > self.config.stable_after else self.crashes + 1
        delay = min(self.config.backoff_base * 2 ** max(self.crashes - 1, 0), self.config.backoff_max)
        log.warning("worker %s exited with %s after %.1f s: replacing in %.1f s", worker.id, code, lived, delay)
        self._listener("worker_crashed", {"id": worker.id, "code": code, "restart_in": delay})
        await asyncio.sleep(delay)
        if not self._stopping and len(self.active) < self.target:
            await self._start()

    async def _read_heartbeats(self, worker: Worker, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb"))
        previous: tuple[float, float] | None = None
        try:
            while line := await reader.readline():
                with contextlib.suppress(ValueError):
                    stats = orjson.loads(line)
                    now = time.monotonic()
                    if previous is not None and now > previous[0]:
                        worker.cpu_percent = 100.0 * (stats["cpu_seconds"] - previous[1]) / (now - previous[0])
                    previous = (now, stats["cpu_seconds"])
                    worker.stats = stats
                    worker.last_beat = now
                    self._count_users(stats.get("users_seen") or ())
        finally:
            transport.close()

    def _count_users(self, hashes: Iterable[str]) -> None:
        today = time.strftime("%Y-%m-%d")
        if today != self.day:
            self.day, self.users_today = today, set()
        self.users_today.update(hashes)

    async def _watch(self) -> None:
        """Hung workers (no heartbeat) are stopped; the reaper replaces them."""
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for worker in list(self.workers.values()):
                silent = now - worker.last_beat
                if worker.state == "ready" and silent > self.config.heartbeat_timeout:
                    log.warning("worker %s sent no heartbeat for %.1f s: stopping it", worker.id, silent)
                    self._listener("worker_hung", {"id": worker.id, "silent": round(silent, 1)})
                    worker.state = "hung"
                    if worker.id in self.backends.members:
                        self.backends.remove(worker.id)
                    task = asyncio.create_task(self._kill_hung(worker))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)

    async def _kill_hung(self, worker: Worker) -> None:
        worker.proc.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(worker.proc.wait()), self.config.stop_timeout)
        except TimeoutError:
            worker.proc.kill()

    async def _shutdown(self) -> None:
        self._stopping = True
        await asyncio.gather(*(self._stop(w) for w in list(self.workers.values())))
        for worker in list(self.workers.values()):
            if worker.proc.returncode is None:
                worker.proc.kill()
                await worker.proc.wait()
