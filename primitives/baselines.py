"""Built-in predictors of the final loss from an early curve (points with step <= early_steps).

All share the signature (train_steps, train_losses, val_steps, val_losses, early_steps,
full_steps) -> float; lower means a better predicted final loss.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from primitives.features import check_budgets, early_part

POWER_GRID = np.linspace(0.02, 3.0, 150)  # exponents b tried by power_law
POWER_START_FRAC = 0.1                     # power_law fits points from 10% of the early budget on


def _early_train(train_steps, train_losses, early_steps, full_steps):
    """Validated early training curve; ValueError with fewer than two early points."""
    check_budgets(early_steps, full_steps)
    n = int((np.asarray(train_steps, dtype=float) <= early_steps).sum())
    s, v = early_part(train_steps, train_losses, early_steps, "train curve")
    if n < 2:
        raise ValueError(f"train curve: need at least two points with step <= {early_steps}, "
                         f"got {n}")
    return s, v


def last_loss(train_steps, train_losses, val_steps, val_losses, early_steps, full_steps) -> float:
    """Last early validation loss, else the last early training loss."""
    s, v = _early_train(train_steps, train_losses, early_steps, full_steps)
    vs, vv = early_part(val_steps, val_losses, early_steps, "val curve")
    return float(vv[-1]) if len(vs) else float(v[-1])


def sotl(train_steps, train_losses, val_steps, val_losses, early_steps, full_steps) -> float:
    """Sum of the early training losses (rank-equivalent to their mean at equal logging)."""
    _early_train(train_steps, train_losses, early_steps, full_steps)
    steps = np.asarray(train_steps, dtype=float)
    losses = np.asarray(train_losses, dtype=float)
    return float(losses[steps <= early_steps].sum())


def fit_power_law(steps: np.ndarray, losses: np.ndarray) -> tuple[float, float, float] | None:
    """Least squares loss = a * step**-b + c (a >= 0, grid over b): (a, b, c), or None.

    For each b of the grid the (a, c) fit is the closed-form simple regression of the losses on
    step**-b, all b at once; the first b of least squared error with a >= 0 wins."""
    keep = steps >= 1
    t, y = np.asarray(steps, dtype=float)[keep], np.asarray(losses, dtype=float)[keep]
    if len(t) < 3:
        return None
    with np.errstate(all="ignore"):
        X = t[None, :] ** -POWER_GRID[:, None]            # (grid, n)
        xm = X.mean(1, keepdims=True)
        xc = X - xm
        var = (xc ** 2).sum(1)
        d = y - y[0]  # losses relative to the first: a constant curve fits exactly (a = 0, c = y[0])
        a = (xc @ (d - d.mean())) / var
        c = y[0] + (d.mean() - a * xm[:, 0])
        sse = ((a[:, None] * X + c[:, None] - y[None, :]) ** 2).sum(1)
    ok = (var > 0) & (a >= 0) & np.isfinite(sse) & np.isfinite(a) & np.isfinite(c)
    if not ok.any():
        return None
    k = int(np.argmin(np.where(ok, sse, np.inf)))
    return float(a[k]), float(POWER_GRID[k]), float(c[k])


def power_law(train_steps, train_losses, val_steps, val_losses, early_steps, full_steps) -> float:
    """Power law fitted to the early train curve, at full_steps (no fit: last train loss)."""
    s, v = _early_train(train_steps, train_losses, early_steps, full_steps)
    start = POWER_START_FRAC * early_steps
    fit = fit_power_law(s[s >= start], v[s >= start])
    if fit is not None:
        a, b, c = fit
        pred = a * float(full_steps) ** -b + c
        if np.isfinite(pred):
            return float(pred)
    return float(v[-1])  # no decreasing fit: the last early training loss


BASELINES: dict[str, Callable[..., float]] = {
    "last-loss": last_loss,
    "sotl": sotl,
    "power-law": power_law,
}
