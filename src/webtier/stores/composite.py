"""URLs of stores made of stores: ``sharded://?shard=URL&shard=URL`` and ``replicated://?replica=URL&...``.

The children's URLs are query values: each is percent-decoded once (``%26`` for ``&``, ``%25`` for
``%``; ``+`` stays a plus, so ``redis+sentinel://`` needs no escaping). ``urllib.parse.quote(url,
safe=":/@")`` encodes any child URL, including a nested composite. Other parameters are the composite's
own options and may appear once each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Collection, Iterable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote

from webtier.exceptions import ConfigError

__all__ = ["CompositeURL", "all_or_raise", "gather_all", "parse_composite_url", "positive_int"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CompositeURL:
    children: list[str]
    options: dict[str, str]


def parse_composite_url(url: str, scheme: str, child: str, options: Collection[str]) -> CompositeURL:
    """Split ``scheme://?child=URL&child=URL&option=value``; ``ConfigError`` names what is wrong."""
    form = f"{scheme}://?{child}=<url>&{child}=<url>"
    head, sep, rest = url.partition("://")
    if not sep or head.lower() != scheme:
        raise ConfigError(f"not a {scheme} store URL: {url!r} (expected {form})")
    where, _, query = rest.partition("?")
    if where not in ("", "/"):
        raise ConfigError(f"{scheme} store URL {url!r} takes no host or path before '?' (expected {form})")
    children: list[str] = []
    found: dict[str, str] = {}
    for item in query.split("&") if query else ():
        name, has_value, raw = item.partition("=")
        value = unquote(raw)
        if not has_value or not value:
            raise ConfigError(f"{scheme} store URL {url!r}: parameter {name!r} has no value")
        if name == child:
            if "://" not in value:
                raise ConfigError(f"{scheme} store URL {url!r}: {child} {value!r} is not a store URL")
            children.append(value)
        elif name in options:
            if name in found:
                raise ConfigError(f"{scheme} store URL {url!r}: parameter {name!r} is given twice")
            found[name] = value
        else:
            known = ", ".join(sorted({child, *options}))
            raise ConfigError(f"{scheme} store URL {url!r}: unknown parameter {name!r} (known: {known})")
    if not children:
        raise ConfigError(f"{scheme} store URL {url!r} names no {child} (expected {form})")
    return CompositeURL(children, found)


def positive_int(value: object, what: str) -> int:
    """``value`` (an int, or its decimal text from a URL) if it is at least 1; else ``ConfigError``."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, not {value!r}")
    return value


async def gather_all(calls: Iterable[Awaitable[T]]) -> list[T | BaseException]:
    """Run ``calls`` concurrently and wait for every one, failed or not; results in order.

    Unlike a plain ``gather``, a failure never leaves the others running unobserved, and unlike a
    ``TaskGroup`` it cancels none of them: a write that reached a child is not abandoned halfway.
    """
    return await asyncio.gather(*calls, return_exceptions=True)


async def all_or_raise(calls: Iterable[Awaitable[T]]) -> list[T]:
    """:func:`gather_all`, then raise the first failure, if any."""
    done: list[T] = []
    for result in await gather_all(calls):
        if isinstance(result, BaseException):
            raise result
        done.append(result)
    return done
