"""What ``webtier demo`` shows: comparison tables, charts, an HTML report, JSON.

Everything here is presentation over the result dicts of :mod:`webtier.demo.scenarios`:
rich tables for the terminal, Markdown tables for the docs, SVG charts drawn by hand
(request share per worker over time, failures over time, memory against sessions)
and one self-contained HTML page that embeds them (no script, no font, no network).
:func:`command` is the body of the ``webtier demo`` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from webtier.demo.scenarios import CLAIMS, MODES, SCENARIOS, DemoEnv, Run, Settings, plan_runs, run_all

__all__ = [
    "chart_files",
    "command",
    "markdown_tables",
    "rich_tables",
    "svg_failures",
    "svg_memory",
    "svg_share",
    "write_html",
    "write_json",
]

Result = dict[str, Any]
_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
_MODE_COLORS = {"stateless": "#59a14f", "stateless-redis": "#4e79a7", "sticky": "#f28e2b", "clustered": "#e15759"}
_SITE_COLORS = {"seoul": "#4e79a7", "frankfurt": "#59a14f"}  # datacenter-failover's share per data center


# -- figures as text --------------------------------------------------------------------------------


def _num(value: Any, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, int | float) and digits:
        return f"{value:.{digits}f}{unit}"
    if isinstance(value, int | float):
        return f"{round(value):,}{unit}"
    return str(value)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.0f}%"


def _mib(kib: Any) -> str:
    return "–" if kib is None else f"{kib / 1024:.1f} MiB"


def _stale(result: Result) -> str:
    v = result.get("visibility") or {}
    if not v.get("trials"):
        return "–"
    if v.get("never_visible") == v["trials"]:
        return "never visible"
    return f"{v.get('first_read_stale', 0)} of {v['trials']}"


def _failed(result: Result) -> str:
    if result.get("requests_failed") is None:
        return "–"
    return (
        f"{result['requests_failed']} ({result.get('failed_idempotent', 0)} / {result.get('failed_non_idempotent', 0)})"
    )


def _shares(result: Result) -> str:
    share = result.get("share_after") or {}
    return " ".join(f"{w} {_pct(s)}" for w, s in share.items()) or "–"


def _per_site(result: Result) -> str:
    return " / ".join(f"{site} {_num(n)}" for site, n in (result.get("requests_per_site") or {}).items()) or "–"


# (header, how to show it) per scenario, after the common columns
Column = tuple[str, Callable[[Result], str]]
_COMMON: list[Column] = [
    ("mode", lambda r: str(r["mode"])),
    ("users", lambda r: _num(r.get("users"))),
    ("logged out", lambda r: _num(r.get("users_logged_out"))),
    ("carts lost", lambda r: _num(r.get("carts_lost"))),
    ("requests", lambda r: _num(r.get("requests"))),
    ("failed (GET / POST)", _failed),
]
_SPECIFIC: dict[str, list[Column]] = {
    "worker-failure": [
        ("killed", lambda r: f"{r['killed_worker']} (last served {r['users_on_killed_worker']} users)"),
        ("replacement ready", lambda r: _num(r.get("replacement_ready_after"), 1, " s")),
    ],
    "scale-out": [
        ("share per worker after scale-out", _shares),
        ("imbalance max/mean", lambda r: _num(r.get("imbalance"), 2)),
        ("old users' requests on w1", lambda r: _pct(r.get("old_users_on_first_worker"))),
    ],
    "rolling-deploy": [
        (
            "workers replaced",
            lambda r: f"{r['workers_replaced']} ({', '.join(r['old_workers'])} → {', '.join(r['new_workers'])})",
        ),
        ("deploy took", lambda r: _num(r.get("deploy_seconds"), 1, " s")),
    ],
    "clustering-cost": [
        ("held per worker", lambda r: _num(r.get("sessions_held_per_worker"))),
        ("RSS per worker", lambda r: _mib(r.get("rss_kib_per_worker"))),
        ("RSS growth per 1000 sessions", lambda r: _mib(r.get("memory_growth_kib_per_1000_sessions"))),
        ("bytes between workers per write", lambda r: _num(r.get("replication_bytes_per_write"), unit=" B")),
        ("bytes to the store per write", lambda r: _num(r.get("store_bytes_in_per_write"), unit=" B")),
        ("replication lag max", lambda r: _num(r.get("cluster_lag_ms_max"), 1, " ms")),
        ("stale reads on another worker", _stale),
    ],
    "store-outage": [
        ("policy", lambda r: str(r.get("policy"))),
        ("outage", lambda r: _num(r.get("outage_seconds"), 1, " s")),
        (
            "during: failed / served (as logged out)",
            lambda r: f"{r['during_failed']} / {r['during_served']} ({r['during_served_logged_out']})",
        ),
        ("items lost after", lambda r: f"{r['items_lost_after_recovery']} of {r['items_stored_before']}"),
        ("first success after", lambda r: _num(r.get("recovered_after"), 1, " s")),
    ],
    "datacenter-failover": [
        ("sessions across sites", lambda r: str(r.get("sessions_across_sites"))),
        ("Seoul's users at the kill", lambda r: _num(r.get("users_at_kill"))),
        ("DNS → frankfurt after", lambda r: _num(r.get("dns_switch_after"), 2, " s")),
        ("users moved after", lambda r: _num(r.get("users_moved_after"), 2, " s")),
        ("first success in frankfurt after", lambda r: _num(r.get("first_success_after"), 2, " s")),
        ("failed in between", lambda r: _num(r.get("failed_in_between"))),
        ("answered per site", _per_site),
    ],
}


# clustering-cost creates sessions rather than shopping: fewer common columns, users are sessions
_COST_COMMON: list[Column] = [
    ("mode", lambda r: str(r["mode"])),
    ("sessions", lambda r: _num(r.get("sessions"))),
    ("logged out", lambda r: _num(r.get("users_logged_out"))),
    ("failed", lambda r: _num(r.get("requests_failed"))),
]


def _rows(scenario: str, results: Sequence[Result]) -> tuple[list[str], list[list[str]]]:
    columns = _COST_COMMON if scenario == "clustering-cost" else _COMMON
    specific = _SPECIFIC.get(scenario, [])
    headers = [h for h, _ in columns] + [h for h, _ in specific]
    rows = []
    for r in results:
        if r["scenario"] != scenario:
            continue
        if not r.get("available", True):
            label = r["mode"] + (f" ({r['policy']})" if r.get("policy") else "")
            rows.append([label, str(r.get("note", "not available"))] + [""] * (len(headers) - 2))
            continue
        rows.append([show(r) for _, show in columns] + [show(r) for _, show in specific])
    return headers, rows


def _scenarios_in(results: Sequence[Result]) -> list[str]:
    return [s for s in SCENARIOS if any(r["scenario"] == s for r in results)]


def rich_tables(results: Sequence[Result]) -> list[Table]:
    """One comparison table per scenario, one row per mode."""
    tables = []
    for scenario in _scenarios_in(results):
        headers, rows = _rows(scenario, results)
        table = Table(title=f"[bold]{scenario}[/]: {CLAIMS[scenario]}", title_justify="left", show_lines=False)
        for n, header in enumerate(headers):
            justify: Literal["left", "right"] = "left" if n == 0 or header == "policy" else "right"
            table.add_column(header, justify=justify, overflow="fold", no_wrap=n == 0)
        for row in rows:
            if len(row) > 1 and row[1].startswith("not available"):
                table.add_row(row[0], f"[dim]{row[1]}[/]", *row[2:])
            else:
                table.add_row(*row)
        tables.append(table)
    return tables


def markdown_tables(results: Sequence[Result]) -> dict[str, str]:
    """Scenario -> its comparison table in Markdown."""
    tables = {}
    for scenario in _scenarios_in(results):
        headers, rows = _rows(scenario, results)
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        tables[scenario] = "\n".join(lines)
    return tables


# -- SVG charts ---------------------------------------------------------------------------------------

_W, _H = 480, 230
_LEFT, _RIGHT, _TOP, _BOTTOM = 46, 14, 40, 32


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _worker_color(worker: str) -> str:
    if worker in _SITE_COLORS:
        return _SITE_COLORS[worker]
    digits = "".join(ch for ch in worker if ch.isdigit())
    return _PALETTE[(int(digits) - 1) % len(_PALETTE)] if digits else "#888888"


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / max(ticks, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


class _Frame:
    """Axes of one chart: maps data to pixels and draws the frame, ticks, title and legend."""

    def __init__(self, title: str, x_max: float, y_max: float, *, x_label: str, y_fmt: Callable[[float], str]) -> None:
        self.title = title
        self.x_max = max(x_max, 1e-9)
        self.y_max = max(y_max, 1e-9)
        self.x_label = x_label
        self.y_fmt = y_fmt
        self.parts: list[str] = []

    def x(self, value: float) -> float:
        return round(_LEFT + (_W - _LEFT - _RIGHT) * value / self.x_max, 1)

    def y(self, value: float) -> float:
        return round(_H - _BOTTOM - (_H - _TOP - _BOTTOM) * value / self.y_max, 1)

    def axes(self, y_ticks: Sequence[float]) -> None:
        p = self.parts
        room = _W - _RIGHT - _LEFT
        fit = f' textLength="{room}" lengthAdjust="spacingAndGlyphs"' if len(self.title) * 7.1 > room else ""
        p.append(f'<text x="{_LEFT}" y="14" class="title"{fit}>{_esc(self.title)}</text>')
        for value in y_ticks:
            y = self.y(value)
            p.append(f'<line x1="{_LEFT}" y1="{y}" x2="{_W - _RIGHT}" y2="{y}" class="grid"/>')
            p.append(
                f'<text x="{_LEFT - 4}" y="{y + 3}" class="tick" text-anchor="end">{_esc(self.y_fmt(value))}</text>'
            )
        step = _nice_step(self.x_max, 6)
        tick = 0.0
        while tick <= self.x_max + 1e-9:
            x = self.x(tick)
            p.append(f'<line x1="{x}" y1="{_H - _BOTTOM}" x2="{x}" y2="{_H - _BOTTOM + 3}" class="axis"/>')
            label = f"{tick:g}"
            p.append(f'<text x="{x}" y="{_H - _BOTTOM + 13}" class="tick" text-anchor="middle">{label}</text>')
            tick += step
        bottom = _H - _BOTTOM
        p.append(f'<line x1="{_LEFT}" y1="{bottom}" x2="{_W - _RIGHT}" y2="{bottom}" class="axis"/>')
        p.append(f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}" class="axis"/>')
        p.append(f'<text x="{_W - _RIGHT}" y="{_H - 4}" class="tick" text-anchor="end">{_esc(self.x_label)}</text>')

    def events(self, events: Sequence[Sequence[Any]]) -> None:
        for n, (t, label) in enumerate(events):
            x = self.x(float(t))
            self.parts.append(f'<line x1="{x}" y1="{_TOP - 4}" x2="{x}" y2="{_H - _BOTTOM}" class="event"/>')
            anchor = "end" if x > _W * 0.6 else "start"
            dx = -3 if anchor == "end" else 3
            y = _TOP + 8 + 10 * (n % 3)
            self.parts.append(
                f'<text x="{x + dx}" y="{y}" class="event-label" text-anchor="{anchor}">{_esc(label)}</text>'
            )

    def legend(self, entries: Sequence[tuple[str, str]]) -> None:
        x = float(_LEFT)
        for label, color in entries:
            self.parts.append(f'<rect x="{x}" y="21" width="9" height="9" fill="{color}"/>')
            self.parts.append(f'<text x="{x + 12}" y="29" class="tick">{_esc(label)}</text>')
            x += 18 + 6.2 * len(label)

    def svg(self) -> str:
        style = (
            "text{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;fill:#222}"
            ".title{font-size:12px;font-weight:600}.tick{font-size:9.5px;fill:#555}"
            ".grid{stroke:#e4e4e4;stroke-width:1}.axis{stroke:#888;stroke-width:1}"
            ".event{stroke:#333;stroke-width:1;stroke-dasharray:3 3}.event-label{font-size:9px;fill:#333}"
            ".empty{font-size:11px;fill:#777}"
        )
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" '
            f'role="img" aria-label="{_esc(self.title)}"><style>{style}</style>'
            f'<rect width="{_W}" height="{_H}" fill="#ffffff"/>' + "".join(self.parts) + "</svg>\n"
        )


def _label(result: Result) -> str:
    return f"{result['scenario']} · {result['mode']}" + (f" ({result['policy']})" if result.get("policy") else "")


def svg_share(result: Result) -> str:
    """Stacked areas: which worker (or data center) answered what share of the requests, per time slice."""
    timeline = result["timeline"]
    width = float(timeline["bin_seconds"])
    times: list[float] = timeline["t"]
    frame = _Frame(
        f"{_label(result)}: request share per {timeline.get('of', 'worker')}",
        (times[-1] + width) if times else 1.0,
        1.0,
        x_label="seconds",
        y_fmt=lambda v: f"{v * 100:.0f}%",
    )
    frame.axes([0, 0.25, 0.5, 0.75, 1.0])
    below = [0.0] * len(times)
    for worker, shares in timeline["share"].items():
        points_top, points_bottom = [], []
        for i, t in enumerate(times):
            top = below[i] + shares[i]
            points_top += [(frame.x(t), frame.y(top)), (frame.x(t + width), frame.y(top))]
            points_bottom += [(frame.x(t), frame.y(below[i])), (frame.x(t + width), frame.y(below[i]))]
            below[i] = top
        polygon = points_top + points_bottom[::-1]
        coords = " ".join(f"{x},{y}" for x, y in polygon)
        frame.parts.append(f'<polygon points="{coords}" fill="{_worker_color(worker)}" fill-opacity="0.85"/>')
    frame.events(timeline["events"])
    frame.legend([(w, _worker_color(w)) for w in timeline["share"]])
    return frame.svg()


def svg_failures(result: Result) -> str:
    """Bars per time slice: failed requests, and incidents (a user logged out, a cart lost...)."""
    timeline = result["timeline"]
    width = float(timeline["bin_seconds"])
    times: list[float] = timeline["t"]
    failed, incidents = timeline["failed"], timeline["incidents"]
    peak = max((f + i for f, i in zip(failed, incidents, strict=True)), default=0)
    step = float(math.ceil(max(1.0, _nice_step(max(peak, 1), 4))))  # whole requests
    top = max(step * math.ceil(max(peak, 1) / step), step)
    frame = _Frame(
        f"{_label(result)}: failures over time",
        (times[-1] + width) if times else 1.0,
        top,
        x_label="seconds",
        y_fmt=lambda v: f"{v:g}",
    )
    ticks = []
    tick = 0.0
    while tick <= top + 1e-9:
        ticks.append(tick)
        tick += step
    frame.axes(ticks)
    for i, t in enumerate(times):
        x0, x1 = frame.x(t) + 0.5, frame.x(t + width) - 0.5
        if failed[i]:
            y = frame.y(failed[i])
            frame.parts.append(
                f'<rect x="{x0}" y="{y}" width="{x1 - x0:.1f}" height="{frame.y(0) - y:.1f}" fill="#e15759"/>'
            )
        if incidents[i]:
            y_low, y_high = frame.y(failed[i]), frame.y(failed[i] + incidents[i])
            frame.parts.append(
                f'<rect x="{x0}" y="{y_high}" width="{x1 - x0:.1f}" height="{y_low - y_high:.1f}" fill="#f28e2b"/>'
            )
    if not peak:
        mid_x, mid_y = (_LEFT + _W - _RIGHT) / 2, (_TOP + _H - _BOTTOM) / 2
        frame.parts.append(
            f'<text x="{mid_x}" y="{mid_y}" class="empty" text-anchor="middle">'
            "no failed request, nobody logged out, no cart lost</text>"
        )
    frame.events(timeline["events"])
    frame.legend([("failed requests", "#e15759"), ("users logged out / carts lost", "#f28e2b")])
    return frame.svg()


def svg_memory(results: Sequence[Result]) -> str | None:
    """Clustering cost: memory per worker (growth since the first step) against the sessions created."""
    runs = [r for r in results if r["scenario"] == "clustering-cost" and r.get("available", True) and r.get("memory")]
    if not runs:
        return None
    x_max = max(m["sessions"] for r in runs for m in r["memory"])
    growth = {
        r["mode"]: [(m["sessions"], (m["rss_kib"] - r["memory"][0]["rss_kib"]) / 1024) for m in r["memory"]]
        for r in runs
    }
    peak = max((g for points in growth.values() for _, g in points), default=0.0)
    step = _nice_step(max(peak, 0.5), 4)
    top = max(step * math.ceil(max(peak, 0.5) / step), step)
    frame = _Frame(
        "clustering-cost: memory per worker as sessions grow",
        x_max,
        top,
        x_label="sessions in the tier",
        y_fmt=lambda v: f"+{v:g} MiB" if v else "0",
    )
    ticks = []
    tick = 0.0
    while tick <= top + 1e-9:
        ticks.append(tick)
        tick += step
    frame.axes(ticks)
    for mode, points in growth.items():
        color = _MODE_COLORS.get(mode, "#888888")
        coords = " ".join(f"{frame.x(s)},{frame.y(max(g, 0))}" for s, g in points)
        frame.parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        for s, g in points:
            frame.parts.append(f'<circle cx="{frame.x(s)}" cy="{frame.y(max(g, 0))}" r="3" fill="{color}"/>')
    frame.legend([(mode, _MODE_COLORS.get(mode, "#888888")) for mode in growth])
    return frame.svg()


def _slug(result: Result) -> str:
    return f"{result['scenario']}-{result['mode']}" + (f"-{result['policy']}" if result.get("policy") else "")


def chart_files(results: Sequence[Result]) -> dict[str, str]:
    """File name -> SVG, for every chart of these results."""
    files: dict[str, str] = {}
    for r in results:
        if not r.get("available", True) or "timeline" not in r or r["scenario"] == "clustering-cost":
            continue
        if r["scenario"] != "store-outage":
            files[f"{_slug(r)}-share.svg"] = svg_share(r)
        files[f"{_slug(r)}-failures.svg"] = svg_failures(r)
    memory = svg_memory(results)
    if memory is not None:
        files["clustering-cost-memory.svg"] = memory
    return files


# -- files ------------------------------------------------------------------------------------------


def write_html(results: Sequence[Result], path: Path, *, notes: Sequence[str] = (), command_line: str = "") -> None:
    """One self-contained page: the tables and every chart, inline."""
    tables = markdown_tables(results)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>webtier demo</title><style>",
        "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1500px;",
        "padding:0 1rem;color:#222}h1{margin-bottom:.2rem}h2{margin-top:2.5rem;border-bottom:1px solid #ddd}",
        "table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}",
        "th,td{border:1px solid #ddd;padding:.3rem .55rem;text-align:right}",
        "th{background:#f6f6f6}td:first-child,th:first-child{text-align:left}",
        ".charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #eee}",
        ".note{color:#666}code{background:#f3f3f3;padding:0 .25rem}</style></head><body>",
        "<h1>webtier demo</h1>",
        f"<p class='note'>{_esc(time.strftime('%Y-%m-%d %H:%M'))} on {_esc(_machine())}"
        + (f" · <code>{_esc(command_line)}</code>" if command_line else "")
        + "</p>",
    ]
    parts += [f"<p class='note'>{_esc(note)}</p>" for note in notes]
    for scenario in _scenarios_in(results):
        parts.append(f"<h2>{_esc(scenario)}</h2><p>{_esc(CLAIMS[scenario])}</p>")
        parts.append(_html_table(tables[scenario]))
        charts = []
        for r in results:
            if r["scenario"] != scenario or not r.get("available", True) or "timeline" not in r:
                continue
            if scenario == "clustering-cost":
                continue
            if scenario != "store-outage":
                charts.append(svg_share(r))
            charts.append(svg_failures(r))
        if scenario == "clustering-cost" and (memory := svg_memory(results)) is not None:
            charts.append(memory)
        if charts:
            parts.append("<div class='charts'>" + "".join(f"<div class='chart'>{c}</div>" for c in charts) + "</div>")
    parts.append("</body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")


def _html_table(markdown: str) -> str:
    lines = markdown.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = [[c.strip().replace("\\|", "|") for c in line.strip("|").split(" | ")] for line in lines[2:]]
    out = ["<table><tr>", *(f"<th>{_esc(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out += ["<tr>", *(f"<td>{_esc(c)}</td>" for c in row), "</tr>"]
    out.append("</table>")
    return "".join(out)


def write_json(results: Sequence[Result], path: Path, *, notes: Sequence[str] = (), settings: Settings) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"scenarios": list(results), "notes": list(notes), "settings": asdict(settings), "machine": _machine()}
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def _machine() -> str:
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


# -- the command -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _stderr_to(path: Path | None) -> Iterator[None]:
    """Send file descriptor 2 (ours and the workers' it is inherited by) to ``path`` meanwhile."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _one_line(result: Result) -> str:
    if not result.get("available", True):
        return f"[dim]{result.get('note', 'not available')}[/]"
    text = (
        f"{result['users_logged_out']} logged out, {result['carts_lost']} carts lost, "
        f"{result['requests_failed']} of {result['requests']} requests failed"
    )
    return f"{text} [dim]({result.get('seconds', 0):.1f} s)[/]"


def command(
    scenario: str | None,
    modes: Sequence[str],
    *,
    users: int,
    json_path: Path | None,
    html_path: Path | None,
    charts_dir: Path | None = None,
    scale: float = 1.0,
    log_path: Path | None = None,
    console: Console | None = None,
) -> list[Result]:
    """``webtier demo``: run, show progress, print the tables, write the report files."""
    console = console or Console()
    scenarios = list(SCENARIOS) if scenario in (None, "all") else [str(scenario)]
    settings = Settings(users=users, scale=scale)
    directory = Path(tempfile.mkdtemp(prefix="webtier-demo-"))
    began = time.monotonic()
    results: list[Result] = []
    notes: list[str] = []
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<40}"),
            BarColumn(),
            TextColumn("[dim]{task.fields[phase]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:

            async def main() -> list[Result]:
                async with DemoEnv(directory, want_redis=True) as env:
                    runs, found = plan_runs(scenarios, modes or MODES, redis=env.redis is not None)
                    notes.extend(found)
                    for note in found:
                        progress.console.print(f"[yellow]note:[/] {note}")
                    overall = progress.add_task("all runs", total=len(runs), phase="")
                    tasks: dict[Run, TaskID] = {}

                    def on_start(run: Run) -> Callable[[str, float], None]:
                        task = progress.add_task(run.label, total=1.0, phase="starting the tier")
                        tasks[run] = task

                        def update(phase: str, fraction: float) -> None:
                            progress.update(task, completed=fraction, phase=phase)

                        return update

                    def on_result(run: Run, result: Result) -> None:
                        progress.update(tasks[run], completed=1.0, phase="")
                        progress.remove_task(tasks[run])
                        progress.console.print(f"  [green]✓[/] {run.label}: {_one_line(result)}")
                        progress.advance(overall)

                    return await run_all(runs, settings, env, on_start=on_start, on_result=on_result)

            with _stderr_to(log_path):
                results = _run_loop(main())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    elapsed = time.monotonic() - began
    console.print()
    for table in rich_tables(results):
        console.print(table)
        console.print()
    console.print(f"{len(results)} runs in {elapsed:.0f} s.")
    line = "webtier demo" + (f" {scenario}" if scenario else "") + "".join(f" --mode {m}" for m in modes)
    if json_path is not None:
        write_json(results, json_path, notes=notes, settings=settings)
        console.print(f"JSON:   {json_path}")
    if html_path is not None:
        write_html(results, html_path, notes=notes, command_line=line)
        console.print(f"report: {html_path}")
    if charts_dir is not None:
        charts_dir.mkdir(parents=True, exist_ok=True)
        for name, svg in chart_files(results).items():
            (charts_dir / name).write_text(svg, encoding="utf-8")
        console.print(f"charts: {charts_dir}/")
    if log_path is not None:
        console.print(f"[dim]worker logs: {log_path}[/]")
    return results


def _run_loop(coroutine: Any) -> list[Result]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        result: list[Result] = asyncio.run(coroutine)
        return result
    done: list[Result] = uvloop.run(coroutine)
    return done
