"""Every method against a table, many seeds, paired statistics: `python -m evo.experiment --table DIR`.

Each method-seed is a full search (the engine's modes, or a peer) whose evaluations are lookups in
the table, run once to the largest budget. After every full training it records the compute used
and the best target so far; reading that history at each budget b gives "the true target of the
best fully trained architecture found within b", so one run serves every budget. Budgets are in
mean full trainings of the table's architectures. Nothing is logged to MLflow (the searches hold
their journal in memory): tens of thousands of child runs would say nothing a table cannot.
"""
from __future__ import annotations

import json
import math
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from evo.checkpoint import Checkpoint
from evo.config import MODES, Config
from evo.peers import PEERS

METHODS = MODES + PEERS
DEFAULT_BUDGETS = (10.0, 20.0, 40.0, 80.0)


class MemoryCheckpoint:
    """The Checkpoint interface with the journal in memory: no files, nothing to resume."""

    def __init__(self, search: dict):
        self.search, self.journal, self.run_id, self.dir = search, {}, None, Path("(memory)")
        self.journal_path = self.dir

    evaluation = Checkpoint.evaluation

    def get(self, event_id: str, default=None):
        return self.journal.get(event_id, default)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self.journal

    def record(self, event_id: str, value) -> None:
        self.journal[event_id] = value

    def once(self, event_id: str, fn):
        if event_id not in self.journal:
            self.journal[event_id] = fn()
        return self.journal[event_id]

    def snapshot(self, state: dict) -> None:
        pass

    def state_path(self, key: str) -> str:
        return f"(memory)/{key}"  # lookups never write states: the ledger finds no file to delete

    def state_available(self, path: str) -> bool:
        return True

    def close(self) -> None:
        pass


class NullTracker:
    """A tracker that records nothing (table experiments)."""

    run_id, experiment, uri = None, None, None
    cost_step = None  # no best-so-far staircase to log

    def __getattr__(self, name):
        return lambda *a, **k: None


def run_method(table: str, method: str, seed: int, budget: float, opts: dict | None = None,
               state: bool = False) -> dict:
    """One method-seed against a table up to `budget` (cost units); returns its history (and with
    `state`, the search's final state as its checkpoint stores it)."""
    from evo.engine import Search
    from evo.executors import SerialExecutor
    from evo.peers import PeerSearch
    from evo.table import TableEvaluator, load_table

    t0 = time.perf_counter()
    cfg = Config(mode=method if method in MODES else "baseline", table=table, seed=seed, gens=100_000,
                 budget_flops=budget, progress=False, workers=0, **(opts or {}))
    ex = SerialExecutor(fn=TableEvaluator(table))
    if method in MODES:
        s = Search(cfg, ex, NullTracker(), ckpt=MemoryCheckpoint({}))
        s.run()
        champ = s.fem.champion() if s.fem and s.fem.pop else None
        extra = {"champion": str(champ) if champ is not None else None,
                 "champion_holdout_tau": getattr(champ, "holdout_tau", None) if champ is not None else None}
    else:
        s = PeerSearch(cfg, method, ex, NullTracker(), ckpt=MemoryCheckpoint({}))
        s.run()
        extra = {}
    tab = load_table(table)
    hist = [{"cost": h["flops"], "best": h["best_val_loss"]} for h in s.ledger.history]
    return {"method": method, "seed": seed, "history": hist, "compute": dict(s.ledger.compute),
            "wall_s": time.perf_counter() - t0, "table_best": tab.best_target, **extra,
            **({"state": s.state()} if state else {})}


def check_budgets(budgets: list[float], tab) -> None:
    """A table answers budgets up to training each of its architectures once: past that a search
    can only train rows again, and one of a method that never repeats itself would never end."""
    limit = len(tab.ids)
    over = [b for b in budgets if not b <= limit]
    if over:
        raise ValueError(f"--budgets {over[0]:g} is more than the table's {limit} architectures trained once "
                         f"each (budgets are in mean full trainings); use budgets up to {limit}")


def _job(args):
    return run_method(*args)


def at_budget(history: list[dict], budget: float) -> float:
    """True target of the best architecture fully trained within `budget` (nan: none yet)."""
    pts = [h["best"] for h in history if h["cost"] <= budget * (1 + 1e-9) and h["best"] is not None
           and math.isfinite(h["best"])]
    return min(pts) if pts else math.nan


def wilcoxon_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided paired Wilcoxon signed-rank p (1.0 when every pair ties; nan when a side is missing)."""
    from scipy.stats import wilcoxon

    ok = np.isfinite(x) & np.isfinite(y)
    d = x[ok] - y[ok]
    if not len(d):
        return math.nan
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(x[ok], y[ok], zero_method="wilcox").pvalue)


def summarise(records: list[dict], methods: list[str], budgets: list[float], unit: float, best: float,
              reference: str = "combined") -> dict:
    """Median/IQR of the final and the regret per method and budget; paired p against `reference`."""
    seeds = sorted({r["seed"] for r in records})
    vals = {m: np.array([[at_budget(next(r["history"] for r in records if r["method"] == m and r["seed"] == s),
                                    b * unit) for s in seeds] for b in budgets]) for m in methods}
    out = {"budgets": list(budgets), "budget_unit": unit, "seeds": len(seeds), "table_best": best,
           "methods": {}, "wilcoxon_p": {}, "wins": {}}
    for m in methods:
        v = vals[m]
        q = [np.nanpercentile(row, [25, 50, 75]) if np.isfinite(row).any() else [math.nan] * 3 for row in v]
        out["methods"][m] = {"median_final": [float(x[1]) for x in q],
                             "iqr_final": [[float(x[0]), float(x[2])] for x in q],
                             "median_regret": [float(x[1] - best) for x in q],
                             "found": [int(np.isfinite(row).sum()) for row in v]}
    if reference in vals:
        for m in methods:
            if m == reference:
                continue
            out["wilcoxon_p"][m] = [wilcoxon_p(vals[reference][i], vals[m][i]) for i in range(len(budgets))]
            out["wins"][m] = [[int((vals[reference][i] < vals[m][i]).sum()), int((vals[reference][i] > vals[m][i]).sum())]
                              for i in range(len(budgets))]
    return out


def markdown(s: dict, note: str, reference: str = "combined") -> str:
    """The summary as a markdown table: median [IQR] final, median regret, p and wins vs reference."""
    lines = [note, "", "| method | " + " | ".join(f"{b:g} trainings" for b in s["budgets"]) + " |",
             "|---" * (len(s["budgets"]) + 1) + "|"]
    for m, d in s["methods"].items():
        cells = []
        for i in range(len(s["budgets"])):
            c = f"{d['median_final'][i]:.4f} [{d['iqr_final'][i][0]:.4f}, {d['iqr_final'][i][1]:.4f}] " \
                f"regret {d['median_regret'][i]:.4f}"
            if m in s["wilcoxon_p"]:
                w = s["wins"][m][i]
                c += f"; p={s['wilcoxon_p'][m][i]:.2g} ({reference} better {w[0]}, worse {w[1]})"
            cells.append(c)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def regret_figure(records: list[dict], methods: list[str], unit: float, best: float, max_budget: float,
                  path: Path) -> Path:
    """Median regret (IQR shaded) against compute, in full trainings, per method."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.geomspace(1.0, max_budget, 40)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in methods:
        rs = [r for r in records if r["method"] == m]
        v = np.array([[at_budget(r["history"], b * unit) - best for r in rs] for b in grid])
        ok = np.isfinite(v).mean(axis=1) >= 0.5
        if not ok.any():
            continue
        med = np.array([np.nanmedian(row) if o else np.nan for row, o in zip(v, ok)])
        lo = np.array([np.nanpercentile(row, 25) if o else np.nan for row, o in zip(v, ok)])
        hi = np.array([np.nanpercentile(row, 75) if o else np.nan for row, o in zip(v, ok)])
        line, = ax.plot(grid, med, label=m, lw=2 if m == "combined" else 1.2)
        ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.12)
    ax.set_xscale("log")
    ticks = [t for t in (1, 2, 5, 10, 20, 40, 80, 160, 320) if t <= max_budget]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("compute (mean full trainings of the table)")
    ax.set_ylabel("regret: best val loss found - table's best")
    ax.set_title(f"Regret vs compute, {len({r['seed'] for r in records})} seeds (median, IQR shaded)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pool_map(fn, jobs: list, workers: int) -> list:
    """[fn(job) for job in jobs], in `workers` spawned processes when more than one (fn: a module-level
    function, so that a spawned worker can import it), one job at a time per worker, order kept."""
    if workers <= 1:
        return [fn(j) for j in jobs]
    with get_context("spawn").Pool(workers) as pool:
        return pool.map(fn, jobs, chunksize=1)


def run(table: str, methods: list[str], seeds: list[int], budgets: list[float], out: Path, workers: int = 2,
        as_json: bool = False) -> dict:
    """Run every method-seed (in `workers` processes), then write results.json, table.md, the figure."""
    from evo.table import load_table

    tab = load_table(table)
    check_budgets(budgets, tab)
    unit, best = tab.mean_full_cost(), tab.best_target
    jobs = [(table, m, s, max(budgets) * unit) for s in seeds for m in methods]
    t0 = time.perf_counter()
    records = pool_map(_job, jobs, workers)
    wall = time.perf_counter() - t0
    s = summarise(records, methods, budgets, unit, best)
    s["wall_s"] = wall
    s["method_seconds"] = {m: float(np.mean([r["wall_s"] for r in records if r["method"] == m])) for m in methods}
    note = (f"table {table} ({len(tab.ids)} architectures, best target {best:.4f}); {len(seeds)} seeds; budgets "
            f"in mean full trainings ({unit:.3g} {tab.meta['cost_unit']} each); cells: median [IQR] of the "
            f"best architecture's true best val loss, median regret, paired Wilcoxon p of combined vs the "
            f"method; {wall:.0f} s on {workers} worker(s)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(markdown(s, note))
    (out / "results.json").write_text(json.dumps({"summary": s, "records": records}, default=float) + "\n")
    fig = regret_figure(records, methods, unit, best, max(budgets), out / "regret_vs_cost.png")
    print(markdown(s, note))
    print(f"files: {out / 'table.md'}, {out / 'results.json'}, {fig}")
    if as_json:
        print(json.dumps({"budgets": s["budgets"],
                          "methods": {m: {"median_final": d["median_final"], "median_regret": d["median_regret"]}
                                      for m, d in s["methods"].items()},
                          "wilcoxon_p": s["wilcoxon_p"]}))
    return s
