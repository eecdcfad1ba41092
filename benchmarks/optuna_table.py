"""Dimorph's Optuna sampler + pruner against Optuna's own, on a table, at equal cost in training steps.

The objective looks each configuration up in the table (docs/TABLES.md). The search space is the
table's: a gene with few values (a choice gene of `Table.space()`) is `suggest_categorical` over
them, any other `suggest_float` over its range (log for the table's log genes). The suggested
configuration snaps to the nearest row, on the table's unit cube, that no earlier trial of the study
trained (a sampler that repeats itself still trains a new model). The trial reports that row's
validation curve point by point from the first step after 0 (`trial.report(loss, step)`, then
`should_prune()`), and returns its target (the best validation loss over the full budget).

Cost is counted in training steps: a pruned trial costs the steps it reported, a complete one the
full budget F. Each (method, seed) study runs until its cost reaches the largest budget; the result
at budget b (in full trainings, b x F steps) is the best target among the trials completed within
b x F steps; regret = that - the table's best target. Paired Wilcoxon signed-rank p-values (scipy,
two-sided) compare Dimorph with each other method over the same seeds.

Methods (Optuna's at their defaults, seeded):
  dimorph            DimorphSampler(seed) + DimorphPruner()
  tpe+hyperband      TPESampler(seed) + HyperbandPruner()
  tpe+median         TPESampler(seed) + MedianPruner()
  random+none        RandomSampler(seed) + NopPruner()
  dimorph-sampler    DimorphSampler(seed) + NopPruner()     (ablations)
  tpe+dimorph-pruner TPESampler(seed) + DimorphPruner()

    python benchmarks/optuna_table.py --table benchmarks/tables/tiny --seeds 50 --budgets 20,40
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make evo/ and primitives/ importable
    sys.path.insert(0, str(ROOT))

from evo.tablestats import pool_map  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("dimorph", "tpe+hyperband", "tpe+median", "random+none", "dimorph-sampler",
           "tpe+dimorph-pruner")


def make(method: str, seed: int, opts: dict):
    import optuna

    from evo.optuna_search import DimorphPruner, DimorphSampler

    dsamp = lambda: DimorphSampler(seed=seed, **opts.get("sampler", {}))  # noqa: E731
    dprune = lambda: DimorphPruner(**opts.get("pruner", {}))  # noqa: E731
    tpe = lambda: optuna.samplers.TPESampler(seed=seed)  # noqa: E731
    table = {"dimorph": (dsamp, dprune),
             "tpe+hyperband": (tpe, optuna.pruners.HyperbandPruner),
             "tpe+median": (tpe, optuna.pruners.MedianPruner),
             "random+none": (lambda: optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner),
             "dimorph-sampler": (dsamp, optuna.pruners.NopPruner),
             "tpe+dimorph-pruner": (tpe, dprune)}
    if method not in table:
        raise SystemExit(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    s, p = table[method]
    return s(), p()


def run_study(job: dict) -> dict:
    """One (method, seed) study until its cost reaches the budget: every trial, in order."""
    import warnings

    import optuna
    from models.presets import ChoiceParam

    from evo.table import load_table

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    table = load_table(job["table"])
    space = table.space()
    F = table.full_steps
    sampler, pruner = make(job["method"], job["seed"], job.get("opts", {}))
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    untried = np.ones(len(table.ids), dtype=bool)
    spent, trials = 0, []

    def objective(trial):
        nonlocal spent
        u = []
        for p in space.space:
            if isinstance(p, ChoiceParam):
                u.append(p.encode(trial.suggest_categorical(p.name, list(p.choices))))
            else:
                u.append(p.encode(trial.suggest_float(p.name, p.low, p.high, log=p.log)))
        d = np.where(untried, ((space.unit_rows - np.array(u)) ** 2).sum(axis=1), np.inf)
        i = int(np.argmin(d))
        untried[i] = False
        steps, losses = table.curves[i]["val"]
        for s, v in zip(steps.tolist(), losses.tolist()):
            if s < 1:  # the loss before training: not a report
                continue
            trial.report(v, s)
            if trial.should_prune():
                spent += s
                trials.append({"row": i, "steps": s, "cost": spent, "value": None})
                raise optuna.TrialPruned()
        spent += F
        trials.append({"row": i, "steps": F, "cost": spent, "value": float(table.targets[i])})
        return float(table.targets[i])

    def stop(study, _trial):
        if spent >= job["budget_steps"] or not untried.any():
            study.stop()

    t0 = time.perf_counter()
    study.optimize(objective, callbacks=[stop])
    return {"method": job["method"], "seed": job["seed"], "trials": trials,
            "seconds": time.perf_counter() - t0}


def compact(study: dict) -> dict:
    """A study as the JSON keeps it: its counts and the completed trials (cost, value), not every trial."""
    done = [[t["cost"], t["value"]] for t in study["trials"] if t["value"] is not None]
    return {"method": study["method"], "seed": study["seed"], "seconds": study["seconds"],
            "trials": len(study["trials"]), "completed_cost_value": done}


def best_within(trials: list[dict], cost: float) -> float:
    return min((t["value"] for t in trials if t["value"] is not None and t["cost"] <= cost),
               default=math.inf)


def summarise(results: list[dict], budgets: list[float], F: int, best: float, methods: list[str]):
    from scipy.stats import wilcoxon

    regret = {m: {b: np.array([best_within(r["trials"], b * F) - best for r in
                               sorted((r for r in results if r["method"] == m), key=lambda r: r["seed"])])
                  for b in budgets} for m in methods}
    out = {}
    for m in methods:
        runs = [r for r in results if r["method"] == m]
        row = {"trials": float(np.mean([len(r["trials"]) for r in runs])),
               "pruned": float(np.mean([sum(t["value"] is None for t in r["trials"]) for r in runs])),
               "seconds_per_study": float(np.mean([r["seconds"] for r in runs])), "budgets": {}}
        for b in budgets:
            x = regret[m][b]
            cell = {"median": float(np.median(x)), "mean": float(np.mean(x)),
                    "per_seed": [float(v) for v in x]}
            if m != "dimorph" and "dimorph" in regret:
                y = regret["dimorph"][b]
                diff = y - x
                cell["dimorph_minus_this_median"] = float(np.median(diff))
                cell["dimorph_wins_ties_losses"] = [int((diff < 0).sum()), int((diff == 0).sum()),
                                                    int((diff > 0).sum())]
                cell["wilcoxon_p"] = float(wilcoxon(y, x).pvalue) if np.any(diff != 0) else 1.0
            row["budgets"][str(b)] = cell
        out[m] = row
    return out


def markdown(res: dict) -> str:
    s = res["setup"]
    bs = [str(b) for b in s["budgets"]]
    head = " | ".join(f"median regret @{b}" for b in bs)
    pv = " | ".join(f"Dimorph vs this @{b}: W/T/L, p" for b in bs)
    lines = [f"Table {s['table']} ({s['n_rows']} rows, best target {s['best']:.4f}); seeds "
             f"{s['seeds'][0]}-{s['seeds'][-1]}; budgets in full trainings of {s['full_steps']} steps.",
             "", f"| method | {head} | trials | pruned | {pv} |",
             "|---|" + "---|" * (2 * len(bs) + 2)]
    for m, r in res["methods"].items():
        cells = [f"{r['budgets'][b]['median']:.4f}" for b in bs]
        comp = []
        for b in bs:
            c = r["budgets"][b]
            comp.append("-" if "wilcoxon_p" not in c else
                        f"{'/'.join(map(str, c['dimorph_wins_ties_losses']))}, {c['wilcoxon_p']:.3g}")
        lines.append(f"| {m} | {' | '.join(cells)} | {r['trials']:.0f} | {r['pruned']:.0f} | "
                     f"{' | '.join(comp)} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--table", default=str(ROOT / "benchmarks" / "tables" / "tiny"))
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--first-seed", type=int, default=0, help="tune on 1000+, report on 0+")
    ap.add_argument("--budgets", default="20,40", help="in full trainings")
    ap.add_argument("--methods", default=",".join(METHODS[:4]))
    ap.add_argument("--sampler-opts", default="{}", help="JSON: DimorphSampler keyword arguments")
    ap.add_argument("--pruner-opts", default="{}", help="JSON: DimorphPruner keyword arguments")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    from evo.table import load_table

    t0 = time.perf_counter()
    table = load_table(a.table)
    budgets = [float(b) for b in a.budgets.split(",") if b.strip()]
    methods = [m for m in a.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    opts = {"sampler": json.loads(a.sampler_opts), "pruner": json.loads(a.pruner_opts)}
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    F = table.full_steps
    jobs = [{"table": str(a.table), "method": m, "seed": s, "budget_steps": max(budgets) * F,
             "opts": opts} for s in seeds for m in methods]
    results = pool_map(run_study, jobs, a.workers)
    best = table.best_target
    res = {"setup": {"table": str(a.table), "n_rows": len(table.ids), "full_steps": F, "best": best,
                     "budgets": budgets, "seeds": seeds, "methods": methods, "opts": opts,
                     "cost": "training steps", "space": "categorical for choice genes, float "
                     "(log for log genes) otherwise; snapped to the nearest untried row"},
           "methods": summarise(results, budgets, F, best, methods),
           "studies": [compact(r) for r in results], "seconds": time.perf_counter() - t0}
    name = Path(a.table).resolve().name
    out = Path(a.out) if a.out else RESULTS / f"optuna_table_{name}_seeds{seeds[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, default=float) + "\n")
    print(markdown(res))
    print(f"\n{len(jobs)} studies in {res['seconds']:.0f} s with {a.workers} worker(s); written to {out}")
    return res


if __name__ == "__main__":
    main()
