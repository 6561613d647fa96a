"""Two data centers behind the GeoDNS: a user fails over with their session (SEEDS §4).

Each data center is a whole ``webtier up`` (balancer and workers) on its own loopback address with
its own session store (a SQLite file), and each replicates every session change to the other's
store (``replicated://``, its own store first). The GeoDNS sends a Seoul client to Seoul; when
Seoul dies, DNS moves the client to Frankfurt, where the same cookie finds the same user and cart
in Frankfurt's own copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.geo.test_service import document, resolve, until
from tests.servers import free_port, wait_for_port
from tests.test_up import clean_env, webtier
from webtier.geo.config import geo_config_from_mapping
from webtier.geo.service import GeoDNS
from webtier.stores import open_store

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@contextlib.contextmanager
def datacenter(host: str, port: int, store: str, directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    admin = free_port()
    log = directory / f"dc-{host}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            webtier("up", "--host", host, "--port", port, "--admin-port", admin, "--workers", 1, "--store", store),
            cwd=directory,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the test can take the whole site down
        )
    try:
        try:
            wait_for_port(port, timeout=30, proc=proc, host=host)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"data center {host} did not start: {exc}\n{log.read_text(errors='replace')}")
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


async def ready(url: str, deadline: float = 30.0) -> None:
    """Wait until the site's balancer has a worker in rotation."""
    start = time.monotonic()
    async with httpx.AsyncClient(trust_env=False) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            assert time.monotonic() - start < deadline, f"{url} never answered 200"
            await asyncio.sleep(0.1)


async def test_a_user_fails_over_to_the_next_data_center_and_stays_logged_in(tmp_path: Path) -> None:
    port = free_port()
    seoul_store = "replicated://?replica=sqlite:///seoul.db&replica=sqlite:///frankfurt.db"
    frankfurt_store = "replicated://?replica=sqlite:///frankfurt.db&replica=sqlite:///seoul.db"
    with (
        datacenter("127.0.0.2", port, seoul_store, tmp_path) as seoul,
        datacenter("127.0.0.3", port, frankfurt_store, tmp_path),
    ):
        for host in ("127.0.0.2", "127.0.0.3"):
            await ready(f"http://{host}:{port}/api/whoami")
        config = geo_config_from_mapping(
            document(f"http://127.0.0.2:{port}/healthz", f"http://127.0.0.3:{port}/healthz")
        )
        geo = GeoDNS(config)
        await geo.start()
        try:
            assert geo.address is not None
            dns_port = geo.address[1]
            (address,) = await resolve(dns_port)
            assert address == "127.0.0.2"  # a Seoul client goes to Seoul
            async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
                login = await client.post(f"http://{address}:{port}/api/login", json={"user": "minji"})
                assert login.status_code == 200
                cookie = login.headers["set-cookie"].split(";", 1)[0]
                cart = await client.post(
                    f"http://{address}:{port}/api/cart", json={"item": "kimchi"}, headers={"cookie": cookie}
                )
                assert cart.json()["items"] == {"kimchi": 1}

                os.killpg(seoul.pid, signal.SIGKILL)  # the Seoul data center is lost, workers and all
                await until(dns_port, ["127.0.0.3"])
                (address,) = await resolve(dns_port)
                after = await client.get(f"http://{address}:{port}/api/cart", headers={"cookie": cookie})
            assert after.status_code == 200
            body = after.json()
            assert body["user"] == "minji" and body["items"] == {"kimchi": 1}
            assert address == "127.0.0.3" and seoul.poll() is not None  # served by the only site left
        finally:
            await geo.stop()
    frankfurt_copy = open_store(f"sqlite:///{tmp_path / 'frankfurt.db'}")
    try:  # Seoul wrote the session to Frankfurt's store too: that copy is what Frankfurt served
        assert len(await frankfurt_copy.sessions_of("minji", time.time())) == 1
    finally:
        await frankfurt_copy.close()
