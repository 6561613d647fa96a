"""Which form of the balancer's hot path is loaded: compiled with mypyc, or plain Python.

``make`` compiles the modules a proxied request runs through (``setup.py`` lists them) into
extension modules beside their sources, and builds the C head scanners (``_wire``, see
:mod:`webtier.balancer.wire`); Python then imports the extensions first. A build older than its
source would hide an edit, so importing the balancer warns about one.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

__all__ = [
    "HOT_MODULES",
    "StaleBuildWarning",
    "compiled_modules",
    "head_scanner",
    "stale_builds",
    "warn_if_stale",
]

HOT_MODULES = ("backends", "health", "http", "metrics", "proxy", "retry", "strategies", "upstream")
# Extension modules built from C, and their sources.
C_MODULES = {"_wire": "_wire.c"}
_HERE = Path(__file__).parent


class StaleBuildWarning(UserWarning):
    """A compiled module is older than its source: the source's changes are not running."""


def compiled_modules() -> dict[str, bool]:
    """Each hot-path module, and whether the loaded one is compiled."""
    loaded = {}
    for name in HOT_MODULES:
        module = importlib.import_module(f"webtier.balancer.{name}")
        loaded[name] = not str(getattr(module, "__file__", "")).endswith(".py")
    return loaded


def head_scanner() -> str:
    """Who reads plain heads: ``"c"`` (the ``_wire`` scanners are built) or ``"httptools"``."""
    from webtier.balancer import wire

    return "c" if wire.scan_request is not None else "httptools"


def stale_builds(directory: Path = _HERE) -> list[Path]:
    """Compiled hot-path modules in ``directory`` that are older than their source."""
    stale = []
    sources = {name: f"{name}.py" for name in HOT_MODULES} | C_MODULES
    for name, filename in sources.items():
        source = directory / filename
        for suffix in EXTENSION_SUFFIXES:
            built = directory / f"{name}{suffix}"
            if built.exists() and source.exists() and built.stat().st_mtime < source.stat().st_mtime:
                stale.append(built)
    return stale


def warn_if_stale(directory: Path = _HERE) -> None:
    for built in stale_builds(directory):
        warnings.warn(
            f"{built} is older than its source, so Python runs the old compiled code: "
            "run `make` to rebuild it, or delete it to run the source",
            StaleBuildWarning,
            stacklevel=2,
        )
