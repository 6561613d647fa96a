"""Build hook: with ``WEBTIER_COMPILE=1`` the balancer's per-request modules are compiled with mypyc,
and its head scanners (``webtier.balancer._wire``, C) are built.

The modules stay plain, strictly typed Python and run as such without the build step; compiled,
the proxy spends about half the CPU per request. Without ``_wire`` every head goes through
httptools. ``make`` builds them in place (see the Makefile's ``compile`` target), and
:mod:`webtier.balancer.compiled` reports which form is loaded.
"""

import os

from setuptools import Extension, setup

# The modules a proxied request runs through; each must keep to what mypyc compiles.
HOT_PATH = [
    "src/webtier/balancer/backends.py",
    "src/webtier/balancer/health.py",
    "src/webtier/balancer/http.py",
    "src/webtier/balancer/metrics.py",
    "src/webtier/balancer/proxy.py",
    "src/webtier/balancer/retry.py",
    "src/webtier/balancer/strategies.py",
    "src/webtier/balancer/upstream.py",
]


def ext_modules() -> list:
    if os.environ.get("WEBTIER_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    wire = Extension(
        "webtier.balancer._wire",
        ["src/webtier/balancer/_wire.c"],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    )
    return [*mypycify(HOT_PATH, opt_level="3", group_name="webtier_native"), wire]


setup(ext_modules=ext_modules())
