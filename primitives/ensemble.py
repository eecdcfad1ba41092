"""Predictors built from several evolved formulas that stay one formula, a Pareto front of accuracy
against size, and an error interval from residuals.

Everything here works on plain numpy arrays and tree texts; `blend`, `front` and `choose` take a
population object with the interface of evo.females.Females (`raw`, `split`, `ranked`, `champion`,
`from_strings`), so the search can use them on its own females as evo.fit does.

- A blend is `add(mul(w1, t1), add(mul(w2, t2), ...))` plus a constant: a non-negative weighted sum
  of member trees (weights from non-negative least squares, scipy.optimize.nnls, on standardised
  member predictions). Its text is an ordinary tree of the primitive set, so primitives.export
  exports it as ONE sympy expression and every reader of predictor files loads it unchanged.
- A median of three calibrated members is `pmax(pmin(a, b), pmin(pmax(a, b), c))`, also one tree.
- The front holds every distinct formula that no other beats on both score and size.
"""
from __future__ import annotations

import math

import numpy as np

from primitives.fitness import calibrate, kendall_tau
from primitives.pset import BIG

DEFAULT_MEMBERS = 5
"""formulas a blend may draw from: the top ones by fit tau, distinct in their predictions"""
INTERVAL_LEVEL = 0.8
"""coverage aimed at by the residual interval (the 10% and 90% residual quantiles)"""


def const_text(x: float) -> str:
    """A constant as tree text (repr keeps every digit; the export rounds later)."""
    return repr(float(x))


def distinct_members(ranked: list, P: np.ndarray, k: int) -> list[int]:
    """Indices of the first k entries of `ranked` whose prediction columns in P (n, len(ranked))
    are finite, not constant and differ from every one already taken (rank order kept)."""
    taken, seen = [], []
    for j in range(P.shape[1]):
        col = P[:, j]
        if not np.isfinite(col).all() or np.abs(col).max() >= BIG / 10 or col.std() <= 1e-12:
            continue
        z = (col - col.mean()) / col.std()
        if any(np.allclose(z, s, atol=1e-9) for s in seen):
            continue
        taken.append(j)
        seen.append(z)
        if len(taken) == k:
            break
    return taken


def nnls_weights(P: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """(w >= 0, c) with y ~ P @ w + c by least squares; the columns are standardised for the solve
    (non-negativity does not depend on a column's positive scale). ValueError on bad shapes."""
    from scipy.optimize import nnls

    P, y = np.asarray(P, dtype=float), np.asarray(y, dtype=float)
    if P.ndim != 2 or P.shape[0] != y.shape[0] or P.shape[1] == 0:
        raise ValueError(f"need an (n, k >= 1) matrix and n targets, got {P.shape} and {y.shape}")
    mu, sd = P.mean(0), P.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    wz, _ = nnls((P - mu) / sd, y - y.mean())
    w = wz / sd
    return w, float(y.mean() - w @ mu)


def blend_text(texts: list[str], weights, const: float) -> str:
    """Tree text of const + sum(w_i * tree_i) over the members with w_i > 0."""
    parts = [f"mul({const_text(w)}, {t})" for t, w in zip(texts, weights) if w > 0]
    if not parts:
        raise ValueError("a blend needs at least one positive weight")
    text = const_text(const)
    for p in reversed(parts):
        text = f"add({p}, {text})"
    return text


def median3_text(texts: list[str], cals: list[tuple[float, float]]) -> str:
    """Tree text of the median of a_i * tree_i + b_i over three members."""
    if len(texts) != 3 or len(cals) != 3:
        raise ValueError(f"a median needs exactly 3 members, got {len(texts)}")
    a, b, c = (f"add(mul({const_text(x)}, {t}), {const_text(y)})" for t, (x, y) in zip(texts, cals))
    return f"pmax(pmin({a}, {b}), pmin(pmax({a}, {b}), {c}))"


def blend(fem, archive: list, kind: str = "nnls", k: int = DEFAULT_MEMBERS, mask=None) -> dict | None:
    """A blend of fem's top-k distinct formulas (ranked by fit tau), weights fitted on the archive's
    fit part (~mask; mask defaults to fem.split(archive)). Returns {"tree": the blend individual,
    "kind", "members": [{"tree", "weight" (nnls) or "calibration" (median3), "size"}]} or None
    when fewer than two members carry weight."""
    if kind not in ("nnls", "median3"):
        raise ValueError(f"blend kind must be 'nnls' or 'median3', got {kind!r}")
    if not archive:
        return None
    y = np.array([r.target for r in archive], dtype=float)
    mask = fem.split(archive) if mask is None else np.asarray(mask, dtype=bool)
    fit = ~mask
    ranked = fem.ranked(fem.pop)
    X = _matrix(fem, archive)
    with np.errstate(all="ignore"):
        P = np.column_stack([fem.raw(i, archive, X) for i in ranked])
    idx = distinct_members(ranked, P[fit], 3 if kind == "median3" else k)
    if len(idx) < (3 if kind == "median3" else 2):
        return None
    texts = [str(ranked[j]) for j in idx]
    if kind == "nnls":
        w, c = nnls_weights(P[fit][:, idx], y[fit])
        if (w > 0).sum() < 2:
            return None
        text = blend_text(texts, w, c)
        members = [{"tree": t, "weight": float(x), "size": len(ranked[j])}
                   for t, x, j in zip(texts, w, idx) if x > 0]
    else:
        cals = [calibrate(P[fit][:, j], y[fit]) for j in idx]
        if not all(math.isfinite(a) and math.isfinite(b) for a, b in cals):
            return None
        text = median3_text(texts, cals)
        members = [{"tree": t, "calibration": {"a": float(a), "b": float(b)}, "size": len(ranked[j])}
                   for t, (a, b), j in zip(texts, cals, idx)]
    return {"tree": fem.from_strings([text])[0], "kind": kind, "members": members}


def _matrix(fem, archive: list) -> np.ndarray:
    """The archive's feature matrix in fem's feature order (built once for many formulas)."""
    return np.array([[r.features[n] for n in fem.features] for r in archive], dtype=float)


def scores_on(fem, ind, archive: list, mask, X=None) -> tuple[float, float]:
    """(Kendall tau on the fit part ~mask, on the held-out part mask; NaN when mask is empty)."""
    y = np.array([r.target for r in archive], dtype=float)
    p = fem.raw(ind, archive, X)
    mask = np.asarray(mask, dtype=bool)
    return (kendall_tau(p[~mask], y[~mask]),
            kendall_tau(p[mask], y[mask]) if mask.any() else float("nan"))


def choose(fem, archive: list, kind: str = "nnls", k: int = DEFAULT_MEMBERS, champ=None, candidate=None) -> dict:
    """The champion (`champ`, default fem.champion(): the reference rule) or a blend, by the same
    rule: the blend replaces the champion only if it beats it on both the fit part and the held-out
    part of the archive (fem.split). `candidate(champ, mask)` -> {"tree", ...} or None builds
    another challenger than the blend (evo.females' "linear" rule). Returns {"tree", "is_blend",
    "blend" (or None), "scores": {"champion": (fit, held-out), "blend": (fit, held-out) or None}}."""
    champ = fem.champion() if champ is None else champ
    mask = fem.split(archive)
    out = {"tree": champ, "is_blend": False, "blend": None,
           "scores": {"champion": scores_on(fem, champ, archive, mask), "blend": None}}
    if not mask.any():
        return out
    b = blend(fem, archive, kind, k, mask) if candidate is None else candidate(champ, mask)
    if b is None:
        return out
    bf, bh = scores_on(fem, b["tree"], archive, mask)
    cf, ch = out["scores"]["champion"]
    out["blend"], out["scores"]["blend"] = b, (bf, bh)
    if bf > cf and bh > ch:
        out.update(tree=b["tree"], is_blend=True)
    return out


def pareto_front(entries: list[dict], score: str = "score") -> list[dict]:
    """The entries (dicts with "size" and `score`) that no other entry beats on both: a higher or
    equal score at a smaller or equal size, one of them strictly. Sorted by size; of entries equal
    in both, the first is kept."""
    ok = [e for e in entries if math.isfinite(e[score])]
    front = []
    for e in sorted(ok, key=lambda e: (e["size"], -e[score])):
        if not front or e[score] > front[-1][score]:
            front.append(e)
    return front


def front(fem, archive: list) -> list[dict]:
    """Accuracy against size over fem's distinct formulas: Kendall tau on the whole archive (fit
    and held-out parts together) against tree size, the non-dominated ones, smallest first, each
    {"tree", "size", "tau", "fit_tau", "holdout_tau"}."""
    y = np.array([r.target for r in archive], dtype=float)
    mask = fem.split(archive)
    X = _matrix(fem, archive)
    entries, seen = [], set()
    for ind in fem.ranked(fem.pop):
        if str(ind) in seen:
            continue
        seen.add(str(ind))
        with np.errstate(all="ignore"):
            p = fem.raw(ind, archive, X)
        f, h = scores_on(fem, ind, archive, mask, X)
        entries.append({"tree": str(ind), "size": len(ind), "tau": kendall_tau(p, y),
                        "fit_tau": f, "holdout_tau": h if math.isfinite(h) else None, "ind": ind})
    return pareto_front(entries, "tau")


def residual_interval(pred, y, level: float = INTERVAL_LEVEL) -> dict:
    """{"level", "lo", "hi", "n"}: the (1-level)/2 and (1+level)/2 quantiles of y - pred, so that
    [pred + lo, pred + hi] holds about `level` of such targets."""
    if not 0 < level < 1:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    r = np.asarray(y, dtype=float) - np.asarray(pred, dtype=float)
    r = r[np.isfinite(r)]
    if len(r) < 2:
        raise ValueError(f"an interval needs at least 2 finite residuals, got {len(r)}")
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
    return {"level": level, "lo": float(lo), "hi": float(hi), "n": int(len(r))}


def coverage(pred, y, interval: dict) -> float:
    """Share of targets y inside [pred + lo, pred + hi]."""
    p, t = np.asarray(pred, dtype=float), np.asarray(y, dtype=float)
    return float(np.mean((t >= p + interval["lo"]) & (t <= p + interval["hi"])))


def tau_ci(pred, y, seed: int = 0, n_boot: int = 400) -> list:
    """95% bootstrap interval (the curves resampled) of the Kendall tau of pred against y."""
    p, t = np.asarray(pred, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng([seed, 21])
    taus = [kendall_tau(p[i], t[i]) for i in rng.integers(0, len(t), size=(n_boot, len(t)))]
    taus = [x for x in taus if math.isfinite(x)]
    return [float(np.percentile(taus, 2.5)), float(np.percentile(taus, 97.5))] if taus else [None, None]
