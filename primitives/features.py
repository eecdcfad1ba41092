"""Features of an early loss curve, on fractions of the early budget (pure: no I/O, no RNG).

Every feature is defined on budget *fractions*, so a formula over them transfers to curves of
another length. docs/FEATURES.md documents each one (name, definition, unit).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

FRACTIONS = (0.10, 0.25, 0.50, 0.75, 1.00)
LEVELS = ("l10", "l25", "l50", "l75", "l100")
SLOPES = ("s10_25", "s25_50", "s50_75", "s75_100")
CURVE_FEATURES: tuple[str, ...] = (
    "l0", *LEVELS, *SLOPES, "curv50", "curv75", "loglog_slope",
    "drop", "rel_drop", "v_last", "gap", "sotl", "early_frac", "v_pow2",
)
ARCH_FEATURES: tuple[str, ...] = ("log_params", "log_lr")
ALL_FEATURES: tuple[str, ...] = CURVE_FEATURES + ARCH_FEATURES

SMOOTH_HALF_WIDTH = 0.05  # smoothing window half-width, as a fraction of the early budget
LOG_EPS = 1e-12           # keeps log|loss| finite for a zero loss
VAL_EXP_FROM = 0.10       # v_pow2's exponent: validation points from 10% of the early budget on
POW_HORIZON = 2.0         # v_pow2: the validation power law extrapolated to twice the early budget
POW_EXP_CLIP = 10.0       # |exponent| used by v_pow2, so that 2**exponent stays finite


def clean_curve(steps, losses, what: str = "curve") -> tuple[np.ndarray, np.ndarray]:
    """Validate one curve and return (sorted unique steps, mean loss per step) as float arrays."""
    s = np.asarray(steps, dtype=float)
    v = np.asarray(losses, dtype=float)
    if s.ndim != 1 or v.ndim != 1 or s.shape != v.shape:
        raise ValueError(f"{what}: steps and losses must be 1-D of equal length, "
                         f"got shapes {s.shape} and {v.shape}")
    bad = ~np.isfinite(s) | (s < 0) | (s != np.floor(s))
    if bad.any():
        raise ValueError(f"{what}: steps must be non-negative integers, got {s[bad][0]!r}")
    if not np.isfinite(v).all():
        raise ValueError(f"{what}: losses must be finite, got {v[~np.isfinite(v)][0]!r}")
    uniq, inverse = np.unique(s, return_inverse=True)  # sorted; duplicates are averaged
    means = np.bincount(inverse, weights=v) / np.bincount(inverse)
    return uniq, means


def early_part(steps, losses, early_steps: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Clean a curve and keep the points with step <= early_steps."""
    s, v = clean_curve(steps, losses, what)
    keep = s <= early_steps
    return s[keep], v[keep]


def check_budgets(early_steps, full_steps) -> None:
    """Raise ValueError unless 0 < early_steps <= full_steps (integers)."""
    if not isinstance(early_steps, (int, np.integer)) or early_steps <= 0:
        raise ValueError(f"early_steps must be a positive integer, got {early_steps!r}")
    if not isinstance(full_steps, (int, np.integer)) or full_steps < early_steps:
        raise ValueError(f"full_steps must be an integer >= early_steps ({early_steps}), "
                         f"got {full_steps!r}")


def smoothed_at(steps: np.ndarray, losses: np.ndarray, t: float, half_width: float) -> float:
    """Loss at step t: local linear fit to points within half_width of t, else interpolation."""
    t = float(np.clip(t, steps[0], steps[-1]))
    near = np.abs(steps - t) <= half_width
    if near.sum() >= 2:  # steps are unique, so the fit is well posed
        x = steps[near] - t
        y = losses[near]
        xm, ym = x.mean(), y.mean()
        slope = ((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum()
        return float(ym - slope * xm)
    if near.sum() == 1:
        return float(losses[near][0])
    return float(np.interp(t, steps, losses))


def time_mean(steps: np.ndarray, losses: np.ndarray) -> float:
    """Trapezoidal mean of a curve over its step span (plain mean when the span is zero)."""
    span = steps[-1] - steps[0]
    if span <= 0:
        return float(losses.mean())
    area = ((losses[1:] + losses[:-1]) * 0.5 * np.diff(steps)).sum()
    return float(area / span)


def ls_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y on x (x must hold at least two distinct values)."""
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc ** 2).sum())


def val_power_exponent(vs: np.ndarray, vv: np.ndarray, early_steps: int, fallback: float) -> float:
    """Power-law exponent of the early validation curve: least-squares slope of log(|loss| + 1e-12)
    on log(step / E) over the validation points with step >= 0.1 E (step 0 has no logarithm);
    `fallback` (the training curve's exponent) when fewer than two such points exist."""
    late = vs >= VAL_EXP_FROM * early_steps
    if late.sum() < 2:
        return float(fallback)
    return ls_slope(np.log(vs[late] / early_steps), np.log(np.abs(vv[late]) + LOG_EPS))


def _positive_log(value, name: str) -> float:
    """log(value) for a finite positive value, else ValueError naming it."""
    x = float(value)
    if not np.isfinite(x) or x <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(np.log(x))


def curve_features(train_steps, train_losses, val_steps, val_losses, early_steps: int,
                   full_steps: int, n_params: float | None = None,
                   lr: float | None = None) -> dict[str, float]:
    """Features of the early curve (steps <= early_steps); see docs/FEATURES.md."""
    check_budgets(early_steps, full_steps)
    raw_steps = np.asarray(train_steps, dtype=float)
    s, v = early_part(train_steps, train_losses, early_steps, "train curve")
    n_early = int((raw_steps[np.isfinite(raw_steps)] <= early_steps).sum())
    if n_early < 2:
        raise ValueError(f"train curve: need at least two points with step <= {early_steps}, "
                         f"got {n_early}")
    vs, vv = early_part(val_steps, val_losses, early_steps, "val curve")

    half_width = SMOOTH_HALF_WIDTH * early_steps
    levels = [smoothed_at(s, v, f * early_steps, half_width) for f in FRACTIONS]
    f = dict(zip(LEVELS, levels))
    f["l0"] = float(v[0])
    for name, (i, j) in zip(SLOPES, [(0, 1), (1, 2), (2, 3), (3, 4)]):
        # loss change per unit of budget fraction: length-free
        f[name] = (levels[j] - levels[i]) / (FRACTIONS[j] - FRACTIONS[i])
    f["curv50"] = f["s50_75"] - f["s25_50"]
    f["curv75"] = f["s75_100"] - f["s50_75"]
    # power-law exponent: least-squares slope of log|loss| on log(fraction)
    lx = np.log(np.asarray(FRACTIONS))
    ly = np.log(np.abs(np.asarray(levels)) + LOG_EPS)
    f["loglog_slope"] = ls_slope(lx, ly)
    f["drop"] = f["l0"] - f["l100"]
    f["rel_drop"] = f["drop"] / max(abs(f["l0"]), 1e-6)
    f["v_last"] = float(vv[-1]) if len(vs) else f["l100"]
    f["gap"] = f["v_last"] - f["l100"]
    f["sotl"] = time_mean(s, v)
    f["early_frac"] = early_steps / full_steps
    # v_last carried forward to 2E along the validation curve's own power law: a ranking by how
    # low the curve is *and* how fast it still falls, over a horizon short enough that the
    # learning rate (which sets the early slope) does not dominate
    b = val_power_exponent(vs, vv, early_steps, f["loglog_slope"])
    f["v_pow2"] = f["v_last"] * POW_HORIZON ** float(np.clip(b, -POW_EXP_CLIP, POW_EXP_CLIP))
    if n_params is not None:
        f["log_params"] = _positive_log(n_params, "n_params")
    if lr is not None:
        f["log_lr"] = _positive_log(lr, "lr")
    return {name: float(f[name]) for name in ALL_FEATURES if name in f}


def feature_matrix(records: Sequence[Mapping], names: Sequence[str]) -> np.ndarray:
    """(n_records, n_names) matrix; a record is a feature dict or holds one under "features"."""
    rows = []
    for i, rec in enumerate(records):
        feats = rec["features"] if "features" in rec else rec
        missing = [n for n in names if n not in feats]
        if missing:
            raise ValueError(f"record {i} lacks feature {missing[0]!r}")
        rows.append([float(feats[n]) for n in names])
    return np.asarray(rows, dtype=float).reshape(len(rows), len(names))
