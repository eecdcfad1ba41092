"""Rank agreement and the female fitness design (fit/holdout split of the archive).

Archives are small (8-60 fully trained architectures), so selecting a population of formulas on
all of it overfits. The archive is split deterministically by a stable hash (sha256) of each
record's key (`holdout_mask`): membership never changes as the archive grows. A female's
fitness is (Kendall tau on the FIT part, tree size): tau up, size down (creator.PredFitness). The
holdout tau decides the champion among the top females (evo.females.Females.champion). A part with
fewer than two records has tau 0.0 (undefined). Tau is scale-free; `calibrate` maps predictions to
losses for display.

`top_pick` is the decision-based alternative (Config.female_fitness "top"): how good a formula's
picks are when, as in a generation's promotion, it chooses the best few of a handful of candidates.
"""
from __future__ import annotations

import functools
import hashlib
from typing import Sequence

import numpy as np

from primitives.pset import BIG


@functools.lru_cache(maxsize=64)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, k=1)


def _pair_signs(v: np.ndarray) -> np.ndarray:
    """sign(v_i - v_j) for all i < j; equal values (inf == inf included) give 0."""
    i, j = _pairs(len(v))
    return (v[i] > v[j]).astype(float) - (v[i] < v[j]).astype(float)


def _paired(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Equal-length 1-D float arrays with NaN pairs dropped."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep], y[keep]


FAST_TAU_MIN = 400
"""from this many pairs on, kendall_tau counts in O(n log n) (scipy) instead of over all pairs"""


def kendall_tau(x, y) -> float:
    """Kendall tau-b (ties handled); 0.0 when undefined (fewer than 2 points, constant input)."""
    x, y = _paired(x, y)
    if x.size < 2:
        return 0.0
    if x.size >= FAST_TAU_MIN:
        return _kendall_tau_sorted(x, y)
    dx, dy = _pair_signs(x), _pair_signs(y)
    denom = np.sqrt(np.count_nonzero(dx) * np.count_nonzero(dy))
    return float((dx * dy).sum() / denom) if denom > 0 else 0.0


def _kendall_tau_sorted(x: np.ndarray, y: np.ndarray) -> float:
    """The same tau-b by sorting (scipy.stats.kendalltau) on integer codes of the values, so that
    ties, infinities included, are exactly those of the pairwise count."""
    from scipy.stats import kendalltau

    cx, cy = np.unique(x, return_inverse=True)[1], np.unique(y, return_inverse=True)[1]
    if cx.max() == 0 or cy.max() == 0:
        return 0.0
    t = float(kendalltau(cx, cy).statistic)
    return t if np.isfinite(t) else 0.0


TOP_SUBSETS = 256
"""random subsets `top_pick` averages over"""
TOP_SEED = 20261206
"""seed of those subsets (fixed: the score of a formula on an archive never varies)"""


@functools.lru_cache(maxsize=256)
def _subsets(n: int, m: int, k: int) -> np.ndarray:
    """`k` random subsets (rows) of size m of range(n), the same for every (n, m, k); one row, the
    whole range, when m == n. Read-only."""
    if m >= n:
        out = np.arange(n)[None, :]
    else:
        rng = np.random.default_rng([TOP_SEED, n, m, k])
        out = np.argsort(rng.random((k, n)), axis=1)[:, :m]
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=64)
def _subset_ranks(target: bytes, n: int, m: int, k: int) -> np.ndarray:
    """True ranks 0..m-1 of each subset's members within the subset, ties given their average rank
    (cached: every female of a generation is scored on the same targets)."""
    Y = np.frombuffer(target, dtype=float)[_subsets(n, m, k)]
    less = (Y[:, None, :] < Y[:, :, None]).sum(-1)
    equal = (Y[:, None, :] == Y[:, :, None]).sum(-1)
    out = less + 0.5 * (equal - 1)
    out.setflags(write=False)
    return out


def top_pick(pred, target, size: int, picks: int = 1, subsets: int = TOP_SUBSETS) -> float:
    """How good the picks of a formula are: over `subsets` fixed random subsets of `size` records (a
    generation's children), the `picks` with the lowest prediction are chosen (as promotion does),
    and scored by their true rank in the subset: 1 when they are the truly best `picks`, -1 when
    they are the worst, 0 on average for a random choice (tau's scale). Predictions tied across the
    cut count as a random choice among them (the tied share the picks left equally); true ties share
    their average rank; a NaN prediction is never picked before a number. Records with a NaN target
    are dropped. 0.0 when undefined: no more records than picks, or no picks."""
    p = np.asarray(pred, dtype=float).ravel()
    y = np.asarray(target, dtype=float).ravel()
    if p.shape != y.shape:
        raise ValueError(f"pred and target must have the same length, got {p.size} and {y.size}")
    keep = ~np.isnan(y)
    p, y = np.where(np.isnan(p[keep]), np.inf, p[keep]), np.ascontiguousarray(y[keep])
    n = y.size
    m = min(int(size), n)
    if picks < 1 or m <= picks:
        return 0.0
    idx = _subsets(n, m, int(subsets))
    P = p[idx]
    cut = np.sort(P, axis=1)[:, picks - 1: picks]  # the last pick's prediction
    below, at = P < cut, P == cut
    left = picks - below.sum(1, keepdims=True)  # picks the tied at the cut share
    share = np.where(below, 1.0, np.where(at, left / at.sum(1, keepdims=True), 0.0))
    got = (share * _subset_ranks(y.tobytes(), n, m, int(subsets))).sum(1) / picks  # 0: the best
    best, worst = (picks - 1) / 2, m - 1 - (picks - 1) / 2
    return float(np.mean(1.0 - 2.0 * (got - best) / (worst - best)))


def paired_count(x, y) -> int:
    """How many (x, y) pairs kendall_tau and spearman rank: those where neither is NaN."""
    return int(_paired(x, y)[0].size)


def rankdata(v) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    v = np.asarray(v, dtype=float)
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(v.size)
    sorted_v = v[order]
    start = 0
    for end in range(1, v.size + 1):
        if end == v.size or sorted_v[end] != sorted_v[start]:
            ranks[order[start:end]] = 0.5 * (start + end - 1) + 1.0
            start = end
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties); 0.0 when undefined."""
    x, y = _paired(x, y)
    if x.size < 2:
        return 0.0
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else 0.0


def holdout_mask(keys: Sequence[str], frac: float = 1 / 3) -> np.ndarray:
    """True for records in the holdout part: u(key) < frac, u a stable hash of the key in [0, 1)."""
    if not 0.0 <= frac < 1.0:
        raise ValueError(f"frac must be in [0, 1), got {frac!r}")
    for k in keys:
        if not isinstance(k, str):
            raise ValueError(f"keys must be strings, got {k!r}")
    # sha256 rather than crc32: crc32 is linear, so similar keys ("arch-1", "arch-2") cluster
    return np.array([_unit_hash(k) < frac for k in keys], dtype=bool)


def _unit_hash(key: str) -> float:
    """Stable hash of a string, uniform in [0, 1) (the same on every machine and run)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def calibrate(pred, target) -> tuple[float, float]:
    """Least-squares (a, b), target ~ a * pred + b, over finite targets and |pred| < BIG."""
    pred = np.asarray(pred, dtype=float).ravel()
    target = np.asarray(target, dtype=float).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"pred and target lengths differ: {pred.size} vs {target.size}")
    ok = np.isfinite(pred) & (np.abs(pred) < BIG) & np.isfinite(target)
    if not ok.any():
        raise ValueError("calibrate needs at least one finite (pred, target) pair, got none")
    p, t = pred[ok], target[ok]
    var = ((p - p.mean()) ** 2).sum()
    if var == 0:
        return 0.0, float(t.mean())
    a = ((p - p.mean()) * (t - t.mean())).sum() / var
    return float(a), float(t.mean() - a * p.mean())
