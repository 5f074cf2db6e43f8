"""Plain graph algorithms over a DAG given as ``{node: parents}`` (no units, no specs).

Every function takes the parents of each node (its precursors) in listing order, so results are
deterministic: ties are broken by the listing, or by a caller's key.

Example:
    >>> parents = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c", "a")}
    >>> topological_order(parents)
    ['a', 'b', 'c', 'd']
    >>> depths(parents)
    {'a': 0, 'b': 1, 'c': 1, 'd': 2}
    >>> transitive_reduction(parents)["d"]
    ('b', 'c')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from pathray.errors import ConfigError

Parents = Mapping[str, Sequence[str]]


def topological_order(parents: Parents, key: Callable[[str], object] | None = None) -> list[str]:
    """Order the nodes so that every node comes after its parents.

    Args:
        parents: Parents of every node, in listing order.
        key: Among the nodes ready at a step, the one with the smallest key goes first (default:
            the listing order).

    Returns:
        The node ids in a topological order.

    Raises:
        ConfigError: If the graph has a cycle (the message shows one).
    """
    index = {node: i for i, node in enumerate(parents)}
    rank = key or index.__getitem__
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(parents):
        ready = [n for n in parents if n not in done and set(parents[n]) <= done]
        if not ready:
            cycle = find_cycle(parents, done)
            raise ConfigError(
                f"Pipeline nodes must form a DAG. Got a cycle instead: {' -> '.join(cycle)}."
            )
        best = min(ready, key=lambda n: (rank(n), index[n]))
        order.append(best)
        done.add(best)
    return order


def find_cycle(parents: Parents, done: set[str] | None = None) -> list[str]:
    """One cycle among the nodes not in ``done``, as a path in edge direction (first = last).

    Every node left when a topological sort stalls has a parent that is also left, so walking up
    the parents from any of them must revisit a node.
    """
    done = done or set()
    left = [n for n in parents if n not in done]
    if not left:
        return []
    path: list[str] = []
    node = left[0]
    while node not in path:
        path.append(node)
        node = next(p for p in parents[node] if p not in done)
    cycle = [*path[path.index(node) :], node]
    return cycle[::-1]  # parents were walked, so reverse into parent -> child order


def ancestors(parents: Parents, node: str) -> set[str]:
    """All the nodes a node depends on, directly or not."""
    seen: set[str] = set()
    stack = list(parents[node])
    while stack:
        parent = stack.pop()
        if parent not in seen:
            seen.add(parent)
            stack += list(parents[parent])
    return seen


def depths(parents: Parents) -> dict[str, int]:
    """Length of the longest path from a source to each node (sources are at 0)."""
    depth: dict[str, int] = {}
    for node in topological_order(parents):
        depth[node] = 1 + max((depth[p] for p in parents[node]), default=-1)
    return depth


def children(parents: Parents) -> dict[str, list[str]]:
    """The children of every node, in listing order."""
    kids: dict[str, list[str]] = {node: [] for node in parents}
    for node, ps in parents.items():
        for p in ps:
            kids[p].append(node)
    return kids


def transitive_reduction(parents: Parents) -> dict[str, tuple[str, ...]]:
    """Drop every edge implied by a longer path (``a -> c`` when ``a -> b -> c`` exists)."""
    reduced: dict[str, tuple[str, ...]] = {}
    for node, ps in parents.items():
        implied: set[str] = set()
        for p in ps:
            implied |= ancestors(parents, p)
        reduced[node] = tuple(p for p in dict.fromkeys(ps) if p not in implied)
    return reduced
