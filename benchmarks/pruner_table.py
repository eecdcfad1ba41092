"""Optuna pruners replayed on a tabular benchmark: evo.pruner.FormulaPruner against Optuna's own.

The table's architectures are split in two halves by row order. On the first half, `evo.fit`
(in-process: evo.fit.fit) fits a formula on curves of the kind the pruner sees: the validation
points after training starts and up to the early budget E (steps 10, 20, ..., E on the tiny
table), as both the train and the val curve (an Optuna objective reports one value per step), with
log n_params and log lr as features unless --no-arch-features; one formula per early budget of
--early-steps (at least two reports must lie at or before it).

The second half is searched through Optuna: a trial suggests one unit-cube coordinate per gene
(TPESampler, seeded), which snaps to the nearest row of that half that no earlier trial of the
study trained (two continuous suggestions never train the same model twice); it reports the
row's validation curve point by point from the first step after 0 (trial.report(loss, step),
then should_prune()); a pruned trial costs cost_per_step x the step it reached, a completed one
cost_per_step x full_steps and returns the row's target (the best validation loss over the full
budget). Each study runs until its compute reaches the budget (in mean full trainings of the
half) or every row of the half was tried; the same seeds serve every pruner.

Pruners: the formula (one per --early-steps, each with every k of --ks; and all of them as the
stages of one pruner, judged at each budget by the formula of that budget), MedianPruner(),
SuccessiveHalvingPruner(), PatientPruner(MedianPruner(), patience=2) and none (NopPruner); Optuna's
are at their defaults.

Reported per pruner, over seeds: the best target found within the budget (and at 1/4 and 1/2 of
it), its regret against the half's best row, trials run and pruned, and the compute needed to
first find an architecture as good as the TARGET_RANK-th best row of the half (with how many seeds
got there within the budget): the compute saved at equal best-found quality.

    python benchmarks/pruner_table.py --table benchmarks/tables/tiny --seeds 20 --budget 30
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
BUILTIN = ("median", "successive-halving", "patient-median", "none")
TARGET_RANK = 5  # "as good as the 5th best row of the half" (the top 2% of 250)
FRACTIONS = (0.25, 0.5, 1.0)


def half_rows(table, which: str) -> list[int]:
    """Rows of the first or second half of archs.csv (usable: finite target, reaches full_steps)."""
    n = len(table.ids)
    rows = range(0, n // 2) if which == "first" else range(n // 2, n)
    return [i for i in rows if math.isfinite(table.targets[i]) and table.last_step(i) >= table.full_steps]


def reported_curves(table, rows: list[int], E: int, lr_col: int | None):
    """evo.fit inputs on `rows`: the val points <= E as train and val curves, targets, meta."""
    curves, finals, meta = {}, {}, {}
    for i in rows:
        s, v = table.curves[i]["val"]
        keep = (s >= 1) & (s <= E) & np.isfinite(v)
        pts = (s[keep].tolist(), v[keep].tolist())
        curves[table.ids[i]] = {"train": pts, "val": pts, "line": 0}
        finals[table.ids[i]] = (float(table.targets[i]),)
        if lr_col is not None:
            meta[table.ids[i]] = (float(table.n_params[i]), float(table.gene_values[i, lr_col]))
    return curves, finals, meta


def make_pruner(job: dict, F: int, arch):
    import optuna

    from evo.pruner import FormulaPruner

    name = job["pruner"]
    if name.startswith("formula"):
        return FormulaPruner(job["docs"], job["early_steps"], F, k=job["k"], arch_features=arch)
    return {"median": lambda: optuna.pruners.MedianPruner(),
            "successive-halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
            "patient-median": lambda: optuna.pruners.PatientPruner(optuna.pruners.MedianPruner(),
                                                                     patience=2),
            "none": lambda: optuna.pruners.NopPruner()}[name]()


def run_study(job: dict) -> dict:
    """One (pruner, seed) study until its compute reaches the budget: the trajectory of trials."""
    import warnings

    import optuna

    from evo.table import load_table

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    table = load_table(job["table"])
    space = table.space()
    rows = np.array(job["rows"])
    unit = space.unit_rows[rows]
    F = table.full_steps
    lr_col = table.genes.index("lr") if "lr" in table.genes else None
    arch = (lambda t: {"n_params": float(table.n_params[t.user_attrs["row"]]),
                       "lr": float(table.gene_values[t.user_attrs["row"], lr_col])}) \
        if job["arch_features"] else None
    pruner = make_pruner(job, F, arch)
    sampler = optuna.samplers.TPESampler(seed=job["seed"])
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    spent, trials = 0.0, []
    untried = np.ones(len(rows), dtype=bool)

    def objective(trial):
        nonlocal spent
        u = np.array([trial.suggest_float(g, 0.0, 1.0) for g in space.gene_names])
        d = np.where(untried, ((unit - u) ** 2).sum(axis=1), np.inf)
        j = int(np.argmin(d))
        untried[j] = False
        i = int(rows[j])
        trial.set_user_attr("row", i)
        steps, losses = table.curves[i]["val"]
        for s, v in zip(steps.tolist(), losses.tolist()):
            if s < 1:  # the loss before training: not a report
                continue
            trial.report(v, s)
            if trial.should_prune():
                spent += table.cost_per_step[i] * s
                trials.append({"row": i, "steps": s, "cost": spent, "value": None})
                raise optuna.TrialPruned()
        spent += table.cost_per_step[i] * F
        trials.append({"row": i, "steps": F, "cost": spent, "value": float(table.targets[i])})
        return float(table.targets[i])

    def stop(study, _trial):
        if spent >= job["budget_cost"] or not untried.any():
            study.stop()

    study.optimize(objective, callbacks=[stop])
    return {"pruner": job["pruner"], "seed": job["seed"], "trials": trials}


def best_within(trials: list[dict], cost: float) -> float:
    """Best target among the trials completed within `cost` (inf if none)."""
    return min((t["value"] for t in trials if t["value"] is not None and t["cost"] <= cost), default=math.inf)


def cost_to_reach(trials: list[dict], q: float) -> float | None:
    """Compute spent when a completed trial first reached target <= q (None: never)."""
    return next((t["cost"] for t in trials if t["value"] is not None and t["value"] <= q), None)


def summarise(results: list[dict], budget_cost: float, unit: float, best: float, q: float,
              names: list[str]) -> dict:
    out = {}
    for name in names:
        runs = sorted((r for r in results if r["pruner"] == name), key=lambda r: r["seed"])
        if not runs:
            continue
        at = {f: [best_within(r["trials"], f * budget_cost) for r in runs] for f in FRACTIONS}
        reach = [cost_to_reach(r["trials"], q) for r in runs]
        reach_in = [c for c in reach if c is not None and c <= budget_cost]
        n_trials = [len(r["trials"]) for r in runs]
        pruned = [sum(t["value"] is None for t in r["trials"]) for r in runs]
        out[name] = {
            "best_at_budget": {str(f): {"mean": float(np.mean(v)), "median": float(np.median(v)),
                                        "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                                        "per_seed": [float(x) for x in v]} for f, v in at.items()},
            "regret_at_budget": float(np.mean(at[1.0]) - best),
            "reached_target": len(reach_in),
            "cost_to_target_full_trainings": {
                "mean_of_reached": float(np.mean(reach_in) / unit) if reach_in else None,
                "median_all": (float(np.median([c if c is not None and c <= budget_cost else math.inf
                                                for c in reach]) / unit)),
                "per_seed": [None if c is None else c / unit for c in reach]},
            "trials": float(np.mean(n_trials)), "pruned": float(np.mean(pruned)),
            "completed": float(np.mean([n - p for n, p in zip(n_trials, pruned)]))}
    return out


def markdown(res: dict) -> str:
    s = res["setup"]
    lines = [f"Table {s['table']}: Optuna (TPE) on the {s['n_rows']} rows of the second half; budget "
             f"{s['budget']:g} mean full trainings; {len(s['seeds'])} seeds; target quality = the "
             f"{TARGET_RANK}th best row ({s['target_quality']:.4f}; best row {s['best_row']:.4f})."]
    for E, f in s["formulas"].items():
        lines.append(f"Formula at E = {E} of {s['full_steps']} steps, fitted by evo.fit on the first half "
                     f"(held-out tau there {f['test_tau']:.3f}, last-loss {f['test_tau_last_loss']:.3f}): "
                     f"{f['sympy']}")
    lines += ["", "| pruner | best found at budget (mean, median) | regret | at 1/4, 1/2 budget "
              "(mean) | seeds reaching the target | compute to the target (median, full trainings) | "
              "trials | pruned |",
              "|---|---|---|---|---|---|---|---|"]
    for name, r in res["pruners"].items():
        b = r["best_at_budget"]
        med = r["cost_to_target_full_trainings"]["median_all"]
        lines.append(f"| {name} | {b['1.0']['mean']:.4f}, {b['1.0']['median']:.4f} | "
                     f"{r['regret_at_budget']:.4f} | {b['0.25']['mean']:.4f}, {b['0.5']['mean']:.4f} | "
                     f"{r['reached_target']}/{len(s['seeds'])} | "
                     f"{'not reached' if math.isinf(med) else f'{med:.1f}'} | {r['trials']:.0f} | "
                     f"{r['pruned']:.0f} |")
    return "\n".join(lines)


def _csv(text: str, kind) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--table", default=str(ROOT / "benchmarks" / "tables" / "tiny"))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=float, default=30.0, help="in mean full trainings of the half")
    ap.add_argument("--early-steps", default="20,30,60", help="E of the formulas (one each)")
    ap.add_argument("--ks", default="1,3", help="k of the formula pruners")
    ap.add_argument("--fit-seed", type=int, default=0)
    ap.add_argument("--no-arch-features", action="store_true")
    ap.add_argument("--no-stages", action="store_true",
                    help="no pruner with the formulas of all --early-steps as stages")
    ap.add_argument("--builtin", default=",".join(BUILTIN), help="Optuna's pruners to compare")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    from evo.fit import fit
    from evo.table import load_table

    t0 = time.perf_counter()
    table = load_table(a.table)
    F = table.full_steps
    lr_col = table.genes.index("lr") if "lr" in table.genes else None
    arch = not a.no_arch_features and lr_col is not None
    fit_rows, search_rows = half_rows(table, "first"), half_rows(table, "second")
    builtin = _csv(a.builtin, str)
    unknown = [p for p in builtin if p not in BUILTIN]
    if unknown:
        raise SystemExit(f"unknown pruner {unknown[0]!r}; choose from {', '.join(BUILTIN)}")
    targets = np.sort(table.targets[search_rows])
    best, q = float(targets[0]), float(targets[TARGET_RANK - 1])
    unit = float(np.mean([table.cost_per_step[i] for i in search_rows]) * F)
    budget_cost = a.budget * unit
    seeds = list(range(a.seeds))
    specs, formulas, docs = [], {}, {}
    for E in _csv(a.early_steps, int):
        curves, finals, meta = reported_curves(table, fit_rows, E, lr_col)
        fitted = fit(curves, finals, E, F, meta=meta if arch else None, seed=a.fit_seed)
        rep = fitted["report"]["scores"]
        formulas[E] = {"sympy": fitted["doc"]["sympy"], "doc": fitted["doc"],
                       "test_tau": rep["formula"]["test_kendall_tau"],
                       "test_tau_last_loss": rep["last-loss"]["test_kendall_tau"]}
        docs[E] = fitted["doc"]
        specs += [{"pruner": f"formula E={E} k={k}", "docs": [fitted["doc"]], "early_steps": [E], "k": k}
                  for k in _csv(a.ks, int)]
    if len(docs) > 1 and not a.no_stages:
        stages = "+".join(map(str, docs))
        specs += [{"pruner": f"formula E={stages} k={k}", "docs": list(docs.values()),
                   "early_steps": list(docs), "k": k} for k in _csv(a.ks, int)]
    specs += [{"pruner": p} for p in builtin]
    jobs = [{**spec, "table": str(a.table), "rows": search_rows, "arch_features": arch, "seed": s,
             "budget_cost": budget_cost} for s in seeds for spec in specs]
    results = pool_map(run_study, jobs, a.workers)
    res = {"setup": {"table": str(a.table), "n_rows": len(search_rows), "n_fit_rows": len(fit_rows),
                     "full_steps": F, "budget": a.budget, "unit_cost": unit, "seeds": seeds,
                     "arch_features": arch, "best_row": best, "target_quality": q,
                     "target_rank": TARGET_RANK, "formulas": formulas},
           "pruners": summarise(results, budget_cost, unit, best, q, [sp["pruner"] for sp in specs]),
           "studies": results, "seconds": time.perf_counter() - t0}
    out = Path(a.out) if a.out else RESULTS / f"pruner_table_{Path(a.table).resolve().name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, default=float) + "\n")  # compact: every trial of every study
    print(markdown(res))
    print(f"\n{len(jobs)} studies in {res['seconds']:.0f} s with {a.workers} worker(s); written to {out}")
    return res


if __name__ == "__main__":
    main()
