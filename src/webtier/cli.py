"""The ``webtier`` command: a thin shell over the library."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from webtier import __version__
from webtier.config import load_config
from webtier.exceptions import WebtierError

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="webtier")
def main() -> None:
    """Run a Python web tier stateless: shared-store sessions, any request to any worker."""


@main.command()
@click.option("--app", help="ASGI app as module:attribute (default: the bundled demo shop).")
@click.option("--factory/--no-factory", default=None, help="Call --app to get the ASGI app.")
@click.option("--host", help="Public address (default 127.0.0.1).")
@click.option("--port", type=int, help="Public port (default 8080).")
@click.option("--admin-port", type=int, help="Admin API port, bound to 127.0.0.1 only (default 8081).")
@click.option("--store", help="Session store URL (default sqlite:///.webtier/sessions.db).")
@click.option(
    "--cookie-secure/--no-cookie-secure",
    default=None,
    help="Secure cookie flag (default: on, except plain http on loopback).",
)
@click.option("--workers", type=int, help="A fixed number of workers (no autoscaling).")
@click.option("--min-workers", type=int, help="Autoscaling lower bound (default 1).")
@click.option("--max-workers", type=int, help="Autoscaling upper bound (default 4).")
@click.option("--strategy", help="Balancing strategy (default power_of_two).")
@click.option(
    "--mode",
    type=click.Choice(["stateless", "sticky", "clustered"]),
    help="Session architecture: stateless (shared store), or the seeds' baselines for comparison.",
)
@click.option("--log-format", type=click.Choice(["console", "json"]), help="Log lines for people or for machines.")
@click.option("--access-log/--no-access-log", default=None, help="One log line per request (balancer and worker).")
def up(**flags: Any) -> None:
    """Serve the app with sessions in the shared store (settings also from webtier.toml and WEBTIER_*)."""
    from webtier.up import run

    try:
        config = load_config(flags)
        run(config)
    except WebtierError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="Public address host:port.")
@click.option("--backend", "backend_urls", multiple=True, help="Backend URL (repeat), e.g. http://127.0.0.1:9001.")
@click.option("--strategy", default="power_of_two", show_default=True, help="Balancing strategy.")
@click.option(
    "--admin",
    default="127.0.0.1:8081",
    show_default=True,
    help="Admin API address: a loopback IP (127.0.0.1, [::1]) or localhost (binds 127.0.0.1), and a port.",
)
@click.option("--trusted-proxy", "trusted", multiple=True, help="CIDR whose X-Forwarded-For is extended, not replaced.")
def balance(listen: str, backend_urls: tuple[str, ...], strategy: str, admin: str, trusted: tuple[str, ...]) -> None:
    """Run the HTTP load balancer in front of backends."""
    from webtier.balancer import BalancerConfig, parse_backend
    from webtier.balancer.config import parse_address
    from webtier.balancer.server import run
    from webtier.observability.logs import configure_logging

    configure_logging("console")
    from webtier.balancer.strategies import make_strategy

    try:
        host, port = parse_address(listen, what="--listen")
        admin_host, admin_port = parse_address(admin, what="--admin")
        make_strategy(strategy)  # fail fast on an unknown name
        config = BalancerConfig(
            listen_host=host,
            listen_port=port,
            admin_host=admin_host,
            admin_port=admin_port,
            strategy=strategy,
            backends=[parse_backend(url) for url in backend_urls],
            trusted_proxies=trusted,
        )
        run(config)
    except WebtierError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The geo TOML file: zone, data centers, client networks (see docs/geo.md).",
)
@click.option("--listen", help="UDP and TCP address host:port (overrides the file's listen).")
@click.option(
    "--admin", default="127.0.0.1:8053", show_default=True, help="Status and metrics address (loopback only)."
)
def geo(config_path: Path, listen: str | None, admin: str) -> None:
    """Run the GeoDNS: answer each client with its nearest healthy data center."""
    from webtier.balancer.config import parse_address
    from webtier.geo.config import load_geo_config
    from webtier.geo.server import run
    from webtier.observability.logs import configure_logging

    configure_logging("console")
    try:
        run(load_geo_config(config_path, listen=listen), parse_address(admin, what="--admin"))
    except WebtierError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--admin", default="127.0.0.1:8081", show_default=True, help="Admin API address.")
def reload(admin: str) -> None:
    """Rolling restart of a running `webtier up`: every worker replaced, no request failed."""
    request = urllib.request.Request(f"http://{admin}/reload", method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - http:// built above
            click.echo(json.load(response).get("reload", "queued"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise click.ClickException(f"no webtier admin API at {admin}: {exc}") from None


@main.command()
@click.option("--admin", default="127.0.0.1:8081", show_default=True, help="Admin API address.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw status JSON.")
@click.option("--watch", is_flag=True, help="Keep the table up to date (Ctrl-C stops).")
def status(admin: str, as_json: bool, watch: bool) -> None:
    """Show the workers of a running `webtier up` (or the backends of `webtier balance`)."""
    if as_json:
        click.echo(json.dumps(_fetch_status(admin), indent=2))
        return
    from rich.console import Console
    from rich.live import Live

    from webtier.observability.status_view import StatusView

    view = StatusView()
    console = Console()
    if not watch:
        console.print(view.render(_fetch_status(admin)))
        return
    with Live(view.render(_fetch_status(admin)), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(1.0)
                live.update(view.render(_fetch_status(admin)))
        except KeyboardInterrupt:
            pass


@main.command()
@click.argument(
    "scenario",
    required=False,
    type=click.Choice(
        [
            "worker-failure",
            "scale-out",
            "rolling-deploy",
            "clustering-cost",
            "store-outage",
            "datacenter-failover",
            "all",
        ]
    ),
)
@click.option(
    "--mode",
    "modes",
    multiple=True,
    type=click.Choice(["stateless", "stateless-redis", "sticky", "clustered"]),
    help="Run only these modes (repeat; default: all, stateless-redis if redis-server is installed).",
)
@click.option("--users", type=click.IntRange(2, 500), default=24, show_default=True, help="Virtual users per run.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the results as JSON.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".webtier/demo/report.html"),
    show_default=True,
    help="Write the HTML report (tables and charts, self-contained).",
)
@click.option(
    "--charts",
    "charts_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write each chart as SVG here.",
)
@click.option("--scale", type=click.FloatRange(0.2, 10.0), default=1.0, show_default=True, help="Stretch every phase.")
def demo(
    scenario: str | None,
    modes: tuple[str, ...],
    users: int,
    json_path: Path | None,
    html_path: Path | None,
    charts_dir: Path | None,
    scale: float,
) -> None:
    """Measure the seeds' claims here: sticky vs clustered vs stateless, under failure, scale-out, deploys,
    and a whole data center failing behind a GeoDNS."""
    from webtier.demo.report import command

    try:
        command(
            scenario,
            modes,
            users=users,
            json_path=json_path,
            html_path=html_path,
            charts_dir=charts_dir,
            scale=scale,
            log_path=Path(".webtier/demo/workers.log"),
        )
    except WebtierError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--queue", "queue_url", default="sqlite:///.webtier/queue.db", show_default=True, help="Queue URL.")
@click.option("--topic", required=True, help="Topic to put the message on ([A-Za-z0-9_.-], at most 64).")
@click.option("--delay", type=float, default=0.0, show_default=True, help="Seconds before it may be delivered.")
@click.argument("message")
def enqueue(queue_url: str, topic: str, delay: float, message: str) -> None:
    """Put one JSON MESSAGE on a topic of the job queue; print its id."""
    from webtier.queue.command import enqueue as put

    try:
        click.echo(put(queue_url, topic, message, delay=delay))
    except WebtierError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--queue", "queue_url", default="sqlite:///.webtier/queue.db", show_default=True, help="Queue URL.")
@click.option("--topic", required=True, help="Topic to consume.")
@click.option("--handler", "handler_spec", required=True, help="module:function called with each message.")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=1, show_default=True, help="Messages in flight.")
@click.option("--lease", type=float, default=30.0, show_default=True, help="Seconds a handler has before a redelivery.")
@click.option("--max-attempts", type=click.IntRange(1, 1000), default=5, show_default=True, help="Then dead-letter.")
def consume(queue_url: str, topic: str, handler_spec: str, concurrency: int, lease: float, max_attempts: int) -> None:
    """Process a topic's messages until SIGTERM/SIGINT (then finish those in flight and exit)."""
    from webtier.observability.logs import configure_logging
    from webtier.queue.command import consume as run

    configure_logging("console")
    try:
        stats = run(queue_url, topic, handler_spec, concurrency=concurrency, lease=lease, max_attempts=max_attempts)
    except WebtierError as exc:
        raise click.ClickException(str(exc)) from None
    if stats is not None:
        click.echo(f"stopped: {stats.acked} acked, {stats.failed} failed, {stats.lost} lost", err=True)


def _fetch_status(admin: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://{admin}/status", timeout=5) as response:
            data: dict[str, Any] = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise click.ClickException(f"no webtier admin API at {admin}: {exc}") from None
    return data


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
