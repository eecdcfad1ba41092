"""Figures of an experiment, from its method-seed records (see evo/experiment.py).

fig1/fig2: training and validation loss of each method's selected architecture (the paper's
Figures 1-2); fig3: best val loss so far vs training FLOPs (mean over seeds, min-max band);
fig4: the best female's calibrated predictions vs the true best val loss (female, combined).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

SMOOTH = 25  # steps in the running mean of the per-step training loss


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def running_mean(x, width: int) -> np.ndarray:
    """Mean of the last `width` values at each point (fewer at the start)."""
    x = np.asarray(x, dtype=float)
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(0, idx - width)
    return (c[idx] - c[lo]) / (idx - lo)


def best_so_far_on_grid(history: list[dict], grid: np.ndarray) -> np.ndarray:
    """A run's best val loss so far at the FLOPs in grid (NaN before its first and after its end)."""
    f = np.array([h["flops"] for h in history], dtype=float)
    b = np.array([h["best_val_loss"] if h["best_val_loss"] is not None else math.inf for h in history])
    b = np.minimum.accumulate(np.where(np.isfinite(b), b, math.inf))
    out = np.full(len(grid), np.nan)
    for i, g in enumerate(grid):
        k = np.searchsorted(f, g, side="right") - 1
        if k >= 0 and math.isfinite(b[k]) and g <= f[-1]:
            out[i] = b[k]
    return out


def curve_figures(records: list[dict], methods: list[str], out: Path) -> list[Path]:
    """fig1 (train loss, running mean of the per-step loss) and fig2 (val loss at eval points)."""
    plt = _plt()
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    figs = []
    for name, ylabel in (("fig1_train_loss", "training loss (running mean)"), ("fig2_val_loss", "validation loss")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in methods:
            for i, r in enumerate(x for x in records if x["method"] == m and x.get("curves")):
                c = r["curves"]
                if name == "fig1_train_loss":
                    y = running_mean([v if v is not None else np.nan for v in c["train_losses"]], SMOOTH)
                    xs = np.arange(1, len(y) + 1)
                else:
                    xs, y = c["eval_steps"], c["val_losses"]
                ax.plot(xs, y, color=colors[m], lw=1.0, alpha=0.8, label=m if i == 0 else None)
        ax.set(xlabel="step", ylabel=ylabel, title="selected architecture of each method (all seeds)")
        ax.legend(fontsize=8)
        figs.append(_save(fig, out / f"{name}.png"))
    return figs


def compute_figure(records: list[dict], methods: list[str], out: Path) -> Path:
    """fig3: best val loss so far vs training FLOPs, mean over seeds with a min-max band."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    top = max((h["flops"] for r in records for h in r["history"]), default=1.0)
    grid = np.linspace(0, top, 400)
    for i, m in enumerate(methods):
        runs = [r for r in records if r["method"] == m and r["history"]]
        if not runs:
            continue
        if m == "baseline":  # one training: a level line from where it finished
            ax.hlines(np.mean([r["history"][-1]["best_val_loss"] for r in runs]),
                      np.mean([r["history"][-1]["flops"] for r in runs]), top, colors=f"C{i}", linestyles="--", label=m)
            continue
        ys = np.array([best_so_far_on_grid(r["history"], grid) for r in runs])
        ok = ~np.isnan(ys).any(axis=0)  # where every seed has a fully trained architecture
        if not ok.any():
            continue
        ax.plot(grid[ok], ys[:, ok].mean(0), color=f"C{i}", label=m)
        ax.fill_between(grid[ok], ys[:, ok].min(0), ys[:, ok].max(0), color=f"C{i}", alpha=0.15)
    for b in sorted({r["budget_flops"] for r in records if r.get("budget_flops")}):
        ax.axvline(b, color="k", ls=":", lw=0.8)  # the budget: methods stop starting work here
    ax.set(xlabel="training FLOPs used (dotted: budget)", ylabel="best val loss so far",
           title="search progress (mean, min-max over seeds)")
    ax.legend(fontsize=8)
    return _save(fig, out / "fig3_best_vs_compute.png")


def predictor_figure(records: list[dict], out: Path) -> Path | None:
    """fig4: the final champion female on the final archive, per female/combined method-seed."""
    recs = [r for r in records if r.get("predictor")]
    if not recs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(recs), figsize=(3.6 * len(recs), 3.6), squeeze=False)
    for ax, r in zip(axes[0], recs):
        p = r["predictor"]
        t, y, h = np.array(p["true"]), np.array(p["predicted"]), np.array(p["holdout"], dtype=bool)
        ax.scatter(t[~h], y[~h], s=14, label="fit part")
        ax.scatter(t[h], y[h], s=14, marker="s", label="held out")
        lo, hi = float(min(t.min(), y.min())), float(max(t.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], "k:", lw=0.8)
        th = p["tau_holdout"]
        ax.set(xlabel="true best val loss", ylabel="predicted (calibrated)",
               title=f"{r['method']} seed {r['seed']}: tau {p['tau_all']:.2f}"
                     + (f", held out {th:.2f}" if th is not None else ""))
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7)
    return _save(fig, out / "fig4_predicted_vs_true.png")


def all_figures(records: list[dict], methods: list[str], out: Path) -> list[Path]:
    """Every figure the records allow; returns the files written."""
    files = curve_figures(records, methods, out) + [compute_figure(records, methods, out)]
    p = predictor_figure(records, out)
    return files + ([p] if p else [])
