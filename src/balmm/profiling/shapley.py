"""Contributions of modalities to a set function (the probe's macro-F1 on their concatenation)."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from itertools import combinations

import numpy as np

ValueFn = Callable[[frozenset], float]


class CachedGame:
    """A value function ``v(S)`` on subsets of ``players``, each subset evaluated once."""

    def __init__(self, players: Sequence[Hashable], fn: ValueFn) -> None:
        self.players = list(players)
        self.fn = fn
        self.cache: dict[frozenset, float] = {}

    def __call__(self, subset: frozenset) -> float:
        if subset not in self.cache:
            self.cache[subset] = float(self.fn(subset))
        return self.cache[subset]


def exact_shapley(game: CachedGame) -> dict:
    """Exact Shapley values over all 2^M subsets."""
    players = game.players
    m = len(players)
    phi = {}
    for p in players:
        others = [q for q in players if q != p]
        total = 0.0
        for size in range(m):
            w = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for s in combinations(others, size):
                s = frozenset(s)
                total += w * (game(s | {p}) - game(s))
        phi[p] = total
    return phi


def sampled_shapley(game: CachedGame, n_perm: int = 64, seed: int = 0) -> dict:
    """Monte-Carlo Shapley values from ``n_perm`` random permutations (antithetic pairs)."""
    rng = np.random.default_rng(seed)
    players = game.players
    phi = dict.fromkeys(players, 0.0)
    count = 0
    while count < n_perm:
        perm = list(rng.permutation(len(players)))
        for order in (perm, perm[::-1]):  # antithetic sampling halves the variance cheaply
            prefix: frozenset = frozenset()
            prev = game(prefix)
            for i in order:
                prefix = prefix | {players[i]}
                cur = game(prefix)
                phi[players[i]] += cur - prev
                prev = cur
            count += 1
    return {p: v / count for p, v in phi.items()}


MAX_EXACT = 6  # exact Shapley values up to this many players, sampled permutations beyond


def shapley(
    players: Sequence[Hashable],
    fn: ValueFn,
    max_exact: int = MAX_EXACT,
    n_perm: int = 64,
    seed: int = 0,
) -> tuple[dict, dict, str, CachedGame]:
    """Shapley values and leave-one-out deltas of ``fn``.

    Returns:
        (shapley values, leave-one-out deltas ``v(all) - v(all minus m)``, the
        method used ("exact" or "sampled (N permutations)"), the cached game).
    """
    game = CachedGame(players, fn)
    if len(players) <= max_exact:
        phi, method = exact_shapley(game), "exact"
    else:
        phi, method = sampled_shapley(game, n_perm, seed), f"sampled ({n_perm} permutations)"
    full = frozenset(players)
    loo = {p: game(full) - game(full - {p}) for p in players}
    return phi, loo, method, game
