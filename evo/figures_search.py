"""Figures of one search, from its evaluations (logged on the parent run under figures/ and shown in
its description):

- parallel_coordinates.png: every evaluation across its genes to its early and final val loss;
- importance.png: how much each gene explains of the loss (Optuna's fANOVA on an in-memory study
  built from the evaluations);
- pareto.png: (early val loss, final val loss: true once fully trained, else the champion's
  prediction), the points combined mode ranks by NSGA-II fronts, its first front marked;
- lineage.png: who bred whom, generation by generation.

Each figure takes rows (dicts): key, generation, role, parents (keys), genes (dict), early (early
val loss), final (best val loss when fully trained), predicted (the champion's prediction).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from evo.figures import _plt, _save


def _ok(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (both coordinates minimized: another point
    at least as low in both and lower in one dominates it); ties both stay. In input order."""
    front = []
    for i, (a, b) in enumerate(points):
        if not any(c <= a and d <= b and (c < a or d < b) for j, (c, d) in enumerate(points) if j != i):
            front.append(i)
    return front


def final_or_predicted(row: dict) -> float | None:
    """The final val loss the search ranks by: the true one once fully trained, else the prediction."""
    return row["final"] if _ok(row.get("final")) else (row["predicted"] if _ok(row.get("predicted")) else None)


def gene_importance(rows: list[dict], genes: list[str], target: str, seed: int = 0) -> dict[str, float] | None:
    """Each varying gene's share of the variance of `target` (fANOVA, Optuna's evaluator, on the
    rows with a finite target), summing to 1; None with fewer than 4 such rows or no varying gene."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    use = [r for r in rows if _ok(r.get(target)) and all(_ok(r["genes"].get(g)) for g in genes)]
    span = {g: (min(float(r["genes"][g]) for r in use), max(float(r["genes"][g]) for r in use)) for g in genes} if use else {}
    vary = [g for g, (lo, hi) in span.items() if hi > lo]
    if len(use) < 4 or not vary:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    dists = {g: FloatDistribution(*span[g]) for g in vary}
    study.add_trials([optuna.trial.create_trial(params={g: float(r["genes"][g]) for g in vary}, distributions=dists,
                                                value=float(r[target])) for r in use])
    return get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))


def parallel_coordinates(rows: list[dict], genes: list[str], out: Path) -> Path | None:
    """One line per evaluation across its genes, early and final val loss (each axis scaled to its
    own range, labelled with it), coloured by its final (else early) loss; None without rows."""
    rows = [r for r in rows if (_ok(r.get("early")) or _ok(r.get("final"))) and all(_ok(r["genes"].get(g)) for g in genes)]
    if not rows:
        return None
    plt = _plt()
    cols = genes + ["early", "final"]
    names = genes + ["early val loss", "final val loss"]
    X = np.array([[float(r["genes"][g]) for g in genes] + [r[k] if _ok(r.get(k)) else np.nan for k in ("early", "final")]
                  for r in rows])
    seen = [c[~np.isnan(c)] for c in X.T]  # a column may be empty (no evaluation fully trained yet)
    lo = np.array([c.min() if len(c) else 0.0 for c in seen])
    hi = np.array([c.max() if len(c) else 1.0 for c in seen])
    Y = (X - lo) / np.where(hi > lo, hi - lo, 1)
    colour = np.where(np.isnan(X[:, -1]), X[:, -2], X[:, -1])  # final, else early: one of them is there
    cmap = plt.get_cmap("viridis_r")
    norm = plt.Normalize(colour.min(), colour.max() if colour.max() > colour.min() else colour.min() + 1)
    fig, ax = plt.subplots(figsize=(1.4 * len(cols) + 1.5, 4))
    for y, c, full in sorted(zip(Y, colour, ~np.isnan(X[:, -1])), key=lambda t: -t[1]):  # best drawn last
        ax.plot(range(len(cols)), y, color=cmap(norm(c)), lw=1.6 if full else 0.8, alpha=0.9 if full else 0.5)
    for j in range(len(cols)):
        ax.axvline(j, color="k", lw=0.6)
        ax.text(j, -0.07, f"{lo[j]:.3g}", ha="center", va="top", fontsize=7)
        ax.text(j, 1.04, f"{hi[j]:.3g}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(cols)), names, fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.12)
    ax.set_title(f"{len(rows)} evaluations: genes to loss (thick: fully trained; colour: final, else early loss)",
                 fontsize=9)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="val loss", pad=0.01)
    return _save(fig, out / "parallel_coordinates.png")


def importance_figure(rows: list[dict], genes: list[str], out: Path, seed: int = 0) -> Path | None:
    """Bars of each gene's fANOVA importance for the early val loss (every evaluation) and the final
    one (the fully trained); None when neither can be estimated."""
    parts = [(f"early val loss (n={sum(_ok(r.get('early')) for r in rows)})", gene_importance(rows, genes, "early", seed)),
             (f"final val loss (n={sum(_ok(r.get('final')) for r in rows)})", gene_importance(rows, genes, "final", seed))]
    parts = [(name, imp) for name, imp in parts if imp]
    if not parts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 0.5 * len(genes) + 1.5))
    h = 0.8 / len(parts)
    for k, (name, imp) in enumerate(parts):
        ax.barh([i + k * h for i in range(len(genes))], [imp.get(g, 0.0) for g in genes], height=h, label=name)
    ax.set_yticks([i + h * (len(parts) - 1) / 2 for i in range(len(genes))], genes)
    ax.invert_yaxis()
    ax.set(xlabel="share of the loss's variance (fANOVA)", title="which genes matter")
    ax.legend(fontsize=8)
    return _save(fig, out / "importance.png")


def pareto_figure(rows: list[dict], out: Path) -> Path | None:
    """(early val loss, final val loss: true or predicted) of every evaluation with both, the first
    front (what combined mode ranks first) joined; None with no such evaluation."""
    use = [r for r in rows if _ok(r.get("early")) and final_or_predicted(r) is not None]
    if not use:
        return None
    plt = _plt()
    pts = [(r["early"], final_or_predicted(r)) for r in use]
    front = pareto_front(pts)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    true = [i for i, r in enumerate(use) if _ok(r.get("final"))]
    pred = [i for i in range(len(use)) if i not in true]
    ax.scatter([pts[i][0] for i in true], [pts[i][1] for i in true], s=18, label="fully trained (true final)")
    ax.scatter([pts[i][0] for i in pred], [pts[i][1] for i in pred], s=18, marker="x", label="early only (predicted final)")
    f = sorted(pts[i] for i in front)
    ax.step([p[0] for p in f], [p[1] for p in f], where="post", color="C3", lw=1, label=f"first front ({len(f)})")
    for i in front:
        ax.annotate(use[i]["key"], pts[i], fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="early val loss", ylabel="final val loss (true, else predicted)",
           title="the two objectives of combined mode")
    ax.legend(fontsize=8)
    return _save(fig, out / "pareto.png")


def lineage_figure(rows: list[dict], out: Path) -> Path | None:
    """Evaluations by generation (x) and final, else early loss within it (y: best on top), an
    arrow from each parent to its child; None without generations."""
    rows = [r for r in rows if r.get("generation") is not None]
    if not rows:
        return None
    plt = _plt()
    pos = {}
    gens = sorted({int(r["generation"]) for r in rows})
    for g in gens:
        here = sorted((r for r in rows if int(r["generation"]) == g),
                      key=lambda r: (final_or_predicted(r) if _ok(r.get("final")) else r.get("early") or math.inf, r["key"]))
        for i, r in enumerate(here):
            pos[r["key"]] = (g, -i)
    fig, ax = plt.subplots(figsize=(1.8 * len(gens) + 2, 0.45 * max(-y for _, y in pos.values()) + 2.5))
    for r in rows:
        for p in r.get("parents") or []:
            if p in pos:
                ax.annotate("", pos[r["key"]], pos[p], arrowprops=dict(arrowstyle="->", lw=0.6, alpha=0.5, color="0.4"))
    roles = sorted({r.get("role") or "" for r in rows})
    for k, role in enumerate(roles):
        pts = [pos[r["key"]] for r in rows if (r.get("role") or "") == role]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=40, color=f"C{k}", label=role or "-", zorder=3)
    for r in rows:
        loss = r["final"] if _ok(r.get("final")) else r.get("early")
        ax.annotate(f"{r['key']} {loss:.3f}" if _ok(loss) else r["key"], pos[r["key"]], fontsize=7,
                    xytext=(5, -2), textcoords="offset points")
    ax.set_xticks(gens, [f"gen {g}" for g in gens])
    ax.set_xlim(gens[0] - 0.3, gens[-1] + 0.9)
    ax.set_yticks([])
    ax.set_title("lineage: parents to children (label: final, else early val loss; best on top)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, out / "lineage.png")


def search_figures(rows: list[dict], genes: list[str], out: Path, seed: int = 0) -> list[Path]:
    """Every figure the rows allow, written to `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = [parallel_coordinates(rows, genes, out), importance_figure(rows, genes, out, seed),
             pareto_figure(rows, out), lineage_figure(rows, out)]
    return [f for f in files if f is not None]
