"""The consistent-hash ring of the sharded store: pure, no event loop."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from webtier.exceptions import ConfigError
from webtier.stores.ring import HashRing

# Session keys as the stores see them: SHA-256 hex digests.
PINNED = "cbcbccbaabcabcbcbcbaaccc"
KEYS = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20_000)]


def owners(ring: HashRing) -> dict[str, str]:
    return {key: ring.node_for(key) for key in KEYS}


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_shares_are_even_within_a_fifth(n: int) -> None:
    counts = Counter(owners(HashRing([f"shard{i}" for i in range(n)])).values())
    fair = len(KEYS) / n
    assert len(counts) == n
    assert all(0.8 * fair <= count <= 1.2 * fair for count in counts.values()), counts


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_adding_a_node_moves_about_one_in_n_plus_one_keys_all_to_it(n: int) -> None:
    before = HashRing(str(i) for i in range(n))
    after = before.with_node("new")
    old, new = owners(before), owners(after)
    moved = [key for key in KEYS if old[key] != new[key]]
    assert {new[key] for key in moved} == {"new"}  # nothing moves between the old nodes
    assert 0.75 / (n + 1) <= len(moved) / len(KEYS) <= 1.25 / (n + 1)


def test_removing_a_node_moves_only_its_keys() -> None:
    before = HashRing(["a", "b", "c", "d"])
    old, new = owners(before), owners(before.without_node("b"))
    moved = {key for key in KEYS if old[key] != new[key]}
    assert moved == {key for key in KEYS if old[key] == "b"}
    assert "b" not in set(new.values())


def test_owner_depends_on_names_not_their_order_nor_the_process() -> None:
    ring = HashRing(["a", "b", "c"])
    assert owners(ring) == owners(HashRing(["c", "a", "b"]))
    # Pinned: a salted hash() would give other owners in another process.
    assert "".join(ring.node_for(str(i)) for i in range(24)) == PINNED


def test_one_node_owns_everything_and_more_vnodes_even_the_shares() -> None:
    assert set(owners(HashRing(["only"])).values()) == {"only"}

    def spread(vnodes: int) -> float:
        counts = Counter(owners(HashRing([str(i) for i in range(4)], vnodes=vnodes)).values())
        return (max(counts.values()) - min(counts.values())) / (len(KEYS) / 4)

    assert spread(500) < spread(5)


@pytest.mark.parametrize(
    ("nodes", "vnodes", "message"),
    [
        ([], 160, "at least one node"),
        (["a", "a"], 160, "unique"),
        (["a"], 0, "vnodes"),
        (["a"], True, "vnodes"),
    ],
)
def test_bad_rings_are_config_errors(nodes: list[str], vnodes: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HashRing(nodes, vnodes=vnodes)


def test_removing_an_unknown_node_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a node"):
        HashRing(["a"]).without_node("b")
