"""A consistent-hash ring: which shard owns a session key. Pure: no I/O, no clock, no randomness.

Each node sits at ``vnodes`` points of a 64-bit circle (BLAKE2b of ``"name#i"``); a key belongs to the
node of the first point at or after the key's own hash, wrapping around. Many points per node even out
the shares (a share's spread shrinks like ``1/sqrt(vnodes)``). Adding a node takes over only the arcs
that end at its own points, so about ``1/(N+1)`` of the keys move, every one of them to the new node;
removing a node moves only that node's keys. This is what makes resharding cheap (SEEDS §6).

Hashes are BLAKE2b rather than ``hash()``, which Python salts per process: every process must agree on
the owner of a key. Ties between points (vanishingly rare) are broken by node name, so the ring depends
only on the set of names, never on their order.

The balancer has its own ring (:class:`webtier.balancer.strategies.ConsistentHash`), but that one is
about requests and backends with bounded loads; a store needs only ``key -> name``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from hashlib import blake2b

from webtier.exceptions import ConfigError

__all__ = ["DEFAULT_VNODES", "HashRing"]

#: points per node; with 160, each of a few nodes holds its fair share within about ±15%.
DEFAULT_VNODES = 160


def _hash(text: str) -> int:
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """An immutable ring over named nodes; :meth:`node_for` maps a key to one of :attr:`nodes`."""

    __slots__ = ("_hashes", "_owners", "nodes", "vnodes")

    def __init__(self, nodes: Iterable[str], *, vnodes: int = DEFAULT_VNODES) -> None:
        names = tuple(nodes)
        if not names:
            raise ConfigError("a hash ring needs at least one node")
        if len(set(names)) != len(names):
            raise ConfigError(f"hash ring node names must be unique, not {names!r}")
        if isinstance(vnodes, bool) or not isinstance(vnodes, int) or vnodes < 1:
            raise ConfigError(f"hash ring vnodes must be a positive integer, not {vnodes!r}")
        self.nodes = names
        self.vnodes = vnodes
        points = sorted((_hash(f"{name}#{i}"), name) for name in names for i in range(vnodes))
        self._hashes = [point for point, _ in points]
        self._owners = [name for _, name in points]

    def node_for(self, key: str) -> str:
        """The node that owns ``key``."""
        i = bisect_left(self._hashes, _hash(key))
        return self._owners[i if i < len(self._owners) else 0]  # past the last point: wrap to the first

    def with_node(self, name: str) -> HashRing:
        """This ring plus ``name``."""
        return HashRing((*self.nodes, name), vnodes=self.vnodes)

    def without_node(self, name: str) -> HashRing:
        """This ring minus ``name``."""
        if name not in self.nodes:
            raise ConfigError(f"{name!r} is not a node of this ring {self.nodes!r}")
        return HashRing((n for n in self.nodes if n != name), vnodes=self.vnodes)

    def __repr__(self) -> str:
        return f"HashRing({list(self.nodes)!r}, vnodes={self.vnodes})"
