"""Django's own session backend tests (``SessionTestsMixin``) against webtier's engine, over every store.

The suite is not copied into this repository: it is ``tests/sessions_tests/`` of the
source distribution of the installed Django version, fetched with ``pip download`` when
the tests run and cached in the temporary directory, keyed by version. A failed download
fails the tests with pip's message; nothing is skipped for it. The only tests skipped are
those listed in ``NOT_APPLICABLE``, each with its reason.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import django
import pytest

from tests.conftest import STORE_KINDS, store_url
from tests.contrib.django_settings import BASE_APPS, configure

VERSION = django.__version__
SUITE_PACKAGE = "sessions_tests"
MIXIN = "SessionTestsMixin"

# Tests of SessionTestsMixin that cannot apply to this backend: name -> why.
NOT_APPLICABLE: dict[str, str] = {}

_FETCH_FAILED = "suite-not-fetched"


class SuiteUnavailable(Exception):
    pass


def suite_root(version: str = VERSION) -> Path:
    """A directory holding Django's ``sessions_tests`` package for ``version``, downloaded once."""
    root = Path(tempfile.gettempdir()) / f"webtier-django-{version}-tests"
    if (root / SUITE_PACKAGE / "tests.py").is_file():
        return root
    with tempfile.TemporaryDirectory(prefix="webtier-django-sdist-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
        command += ["--disable-pip-version-check", "-q", "-d", tmp, f"django=={version}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not sdists:
            errors = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("WARNING"))
            raise SuiteUnavailable(
                f"could not download Django {version}'s source distribution to get its session tests "
                f"({' '.join(command)} exited {done.returncode}):\n{errors[-3000:]}"
            )
        staging = Path(tempfile.mkdtemp(prefix=root.name + "-", dir=root.parent))
        prefix = f"{sdists[0].name.removesuffix('.tar.gz')}/tests/{SUITE_PACKAGE}/"
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
            if not members:
                raise SuiteUnavailable(f"Django {version}'s sdist has no tests/{SUITE_PACKAGE}/")
            for member in members:
                member.name = f"{SUITE_PACKAGE}/{member.name.removeprefix(prefix)}"
            tar.extractall(staging, members=members, filter="data")
        with contextlib.suppress(OSError):  # another process may have finished first
            os.rename(staging, root)
        shutil.rmtree(staging, ignore_errors=True)
    return root


def mixin_test_names(root: Path) -> list[str]:
    """The test methods of ``SessionTestsMixin``, read from the source (no Django set-up needed)."""
    tree = ast.parse((root / SUITE_PACKAGE / "tests.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == MIXIN:
            return [
                f.name
                for f in node.body
                if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.name.startswith("test")
            ]
    raise SuiteUnavailable(f"{MIXIN} not found in Django {VERSION}'s tests/{SUITE_PACKAGE}/tests.py")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "django_test" in metafunc.fixturenames:
        try:
            names = mixin_test_names(suite_root())
        except SuiteUnavailable:  # reported, as a failure, by the suite_module fixture
            names = [_FETCH_FAILED]
        metafunc.parametrize("django_test", names)


@pytest.fixture(scope="session")
def suite_module() -> Iterator[ModuleType]:
    """Django's ``sessions_tests.tests``, imported with its app installed."""
    try:
        root = suite_root()
    except SuiteUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    configure()
    from django.test.utils import override_settings

    sys.path.insert(0, str(root))
    # The suite's models module declares a model, so its package must be an installed app.
    apps = override_settings(INSTALLED_APPS=[*BASE_APPS, SUITE_PACKAGE])
    apps.enable()
    try:
        yield importlib.import_module(f"{SUITE_PACKAGE}.tests")
    finally:
        apps.disable()
        sys.path.remove(str(root))


@pytest.fixture(scope="session", params=STORE_KINDS)
def suite_case(
    request: pytest.FixtureRequest, suite_module: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> type[unittest.TestCase]:
    """Django's mixin on a ``SimpleTestCase`` whose backend is webtier's engine over one kind of store."""
    from django.test import SimpleTestCase
    from django.test.utils import override_settings

    from webtier.contrib.django import SessionStore

    url, options = store_url(request.param, request, tmp_path_factory.mktemp(request.param))
    case: type[Any] = type(
        f"Webtier{request.param.capitalize()}SessionTests",
        (getattr(suite_module, MIXIN), SimpleTestCase),
        {"backend": SessionStore, "__module__": __name__},
    )
    decorated: type[unittest.TestCase] = override_settings(
        WEBTIER_SESSION_STORE=url, WEBTIER_SESSION_STORE_OPTIONS=options
    )(case)
    return decorated


def test_django_session_suite(suite_case: type[unittest.TestCase], django_test: str) -> None:
    if django_test in NOT_APPLICABLE:
        pytest.skip(NOT_APPLICABLE[django_test])
    result = unittest.TestResult()
    unittest.TestSuite([suite_case(django_test)]).run(result)
    problems = [text for _, text in result.errors + result.failures]
    problems += [f"unexpected success: {test}" for test in result.unexpectedSuccesses]
    problems += [f"skipped by Django ({why}): {test}" for test, why in result.skipped]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    assert result.testsRun == 1


def test_not_applicable_names_exist() -> None:
    """Every entry of NOT_APPLICABLE names a test the installed Django's mixin has."""
    assert set(NOT_APPLICABLE) <= set(mixin_test_names(suite_root()))
