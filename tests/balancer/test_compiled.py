"""The compiled hot path: what setup.py compiles, what is loaded, and stale builds."""

from __future__ import annotations

import ast
import os
import warnings
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from webtier.balancer import compiled
from webtier.balancer.compiled import (
    HOT_MODULES,
    StaleBuildWarning,
    compiled_modules,
    head_scanner,
    stale_builds,
    warn_if_stale,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "webtier" / "balancer"


def _setup_hot_path() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "HOT_PATH" for t in node.targets):
            return [ast.literal_eval(element) for element in node.value.elts]  # type: ignore[attr-defined]
    raise AssertionError("setup.py has no HOT_PATH")


def test_setup_compiles_exactly_the_hot_modules() -> None:
    assert sorted(_setup_hot_path()) == [f"src/webtier/balancer/{name}.py" for name in sorted(HOT_MODULES)]


def test_the_loaded_form_matches_the_files_on_disk() -> None:
    """Where `make` built a module, that build is what runs (and nothing claims to be compiled otherwise)."""
    built = {name: any((PACKAGE / f"{name}{suffix}").exists() for suffix in EXTENSION_SUFFIXES) for name in HOT_MODULES}
    assert compiled_modules() == built


def test_the_head_scanners_loaded_are_the_ones_on_disk() -> None:
    built = any((PACKAGE / f"_wire{suffix}").exists() for suffix in EXTENSION_SUFFIXES)
    assert head_scanner() == ("c" if built else "httptools")


def test_a_scanner_build_older_than_its_c_source_is_reported(tmp_path: Path) -> None:
    built = tmp_path / f"_wire{EXTENSION_SUFFIXES[0]}"
    built.write_bytes(b"")
    (tmp_path / "_wire.c").write_text("/* edited after the build */\n")
    os.utime(built, (1_000_000, 1_000_000))
    assert stale_builds(tmp_path) == [built]


def test_no_compiled_module_is_older_than_its_source() -> None:
    assert stale_builds() == [], "run `make` to rebuild the compiled hot path"


def test_a_build_older_than_its_source_is_reported(tmp_path: Path) -> None:
    source = tmp_path / "proxy.py"
    built = tmp_path / f"proxy{EXTENSION_SUFFIXES[0]}"
    built.write_bytes(b"")
    source.write_text("# edited after the build\n")
    os.utime(built, (1_000_000, 1_000_000))
    assert stale_builds(tmp_path) == [built]
    with pytest.warns(StaleBuildWarning, match="older than its source"):
        warn_if_stale(tmp_path)
    os.utime(built, None)  # rebuilt: newer than the source
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_stale(tmp_path)
    assert compiled.stale_builds(tmp_path) == []
