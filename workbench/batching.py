"""Which consecutive items share a batched pass: the split of least total cost.

Causal tracing (its cells of one token) and activation patching (its cells of one target)
both batch sorted items into passes, where a pass pays a fixed cost and then works for
its earliest item's sake on every item in it; each states that cost, this finds the split.
"""

from __future__ import annotations

from collections.abc import Callable


def cheapest_split(n: int, max_size: int, cost: Callable[[int, int], float]) -> list[tuple[int, int]]:
    """Items 0..n-1, in their order, split into groups [i, j) of at most max_size items with
    the least sum of cost(i, j) (dynamic programming over the split points). For each j,
    cost is asked for i = j - 1 down to j - max_size, so a cost that looks at the items of
    the group can keep a running value while the group grows backwards."""
    best = [0.0] + [float("inf")] * n
    split = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j - 1, max(0, j - max_size) - 1, -1):
            total = best[i] + cost(i, j)
            if total < best[j]:
                best[j], split[j] = total, i
    groups, j = [], n
    while j > 0:
        groups.append((split[j], j))
        j = split[j]
    return groups[::-1]
