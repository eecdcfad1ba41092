"""Does a warm start help the females? Test-set rank quality of the champion with W extra curves.

On a table at its early budget: for each split, a fixed test set, an archive (what a search would
have trained itself) and a disjoint warm pool drawn from one permutation of the usable rows; the
warm sets are nested (the first W of the pool). The project's female evolution (the settings of
benchmarks/predictors_table.py's `female`) runs on archive + warm records, where the warm records
come from evo.warmstart.load_warm_start on the same table (keys "warm:<table>:<arch_id>"), so its
hash fit/hold-out split runs over the union and no curve is in two parts or in the test set. The
GP seed of a split is the same for every W, so the comparisons between W are paired.

Reported per W: the champion's test Kendall tau, last-loss's (the `v_last` reference, the same for
every W), the paired differences champion - last-loss and champion(W) - champion(W=0), each with a
95% bootstrap CI over splits.

    python benchmarks/warmstart_table.py --table benchmarks/tables/tiny --workers 2
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make evo/, primitives/ and benchmarks/ importable
    sys.path.insert(0, str(ROOT))

from benchmarks import predictors_table as pt  # noqa: E402
from evo.ledger import records_from_rows  # noqa: E402
from primitives.fitness import kendall_tau  # noqa: E402

# -- one (split, W) cell (workers get the shared data once, as in predictors_table) -------------
_DATA, _init_worker = pt._DATA, pt._init_worker


def run_cell(task: dict) -> dict:
    """Test tau of the champion fitted on archive + the first W warm rows, and of last-loss."""
    d = _DATA
    ids, y, X, names = d["ids"], d["targets"], d["X"], d["feature_names"]
    recs = lambda idx: records_from_rows([{"key": ids[j], "target": float(y[j]),  # noqa: E731
                                           "features": dict(zip(names, X[j]))} for j in idx])
    fit = recs(task["archive"]) + [d["warm"][ids[j]] for j in task["warm"]]
    test = recs(task["test"])
    t0 = time.perf_counter()
    fem, champ = pt.evolve_female(fit, task["seed"], d["pop"], d["gens"], d["arch_features"])
    yt = y[task["test"]]
    hold = int(fem.split(fit).sum())
    return {"key": task["key"], "female": kendall_tau(fem.raw(champ, test), yt),
            "last-loss": kendall_tau(d["last_loss"][task["test"]], yt), "formula": str(champ),
            "is_reference": str(champ) == "v_last", "fit_tau": float(champ.fitness.values[0]),
            "holdout_tau": float(getattr(champ, "holdout_tau", float("nan"))), "n_fit": len(fit) - hold,
            "n_holdout": hold, "gp_seconds": time.perf_counter() - t0}


# -- statistics -------------------------------------------------------------------------------------
def summarise(cells: dict, warm_sizes, n_splits: int, seed: int) -> list[dict]:
    idx = np.random.default_rng([seed, 1_000_003]).integers(0, n_splits, size=(pt.BOOTSTRAP, n_splits))
    base = [cells[(s, warm_sizes[0])]["female"] for s in range(n_splits)]

    def stat(v):
        return {"mean": float(np.mean(v)), "ci95": pt.bootstrap_ci(v, idx), "values": [float(x) for x in v]}

    def paired(v):
        return {**stat(v), "wins": int(sum(x > 0 for x in v)), "ties": int(sum(x == 0 for x in v)),
                "losses": int(sum(x < 0 for x in v))}

    rows = []
    for w in warm_sizes:
        reps = [cells[(s, w)] for s in range(n_splits)]
        fem, last = [r["female"] for r in reps], [r["last-loss"] for r in reps]
        rows.append({"warm": w, "female": stat(fem), "last-loss": stat(last),
                     "female_minus_last_loss": paired([f - b for f, b in zip(fem, last)]),
                     "female_minus_no_warm": paired([f - b for f, b in zip(fem, base)]),
                     "reference_chosen": int(sum(r["is_reference"] for r in reps)),
                     "formulas": [r["formula"] for r in reps], "fit_tau": [r["fit_tau"] for r in reps],
                     "holdout_tau": [r["holdout_tau"] for r in reps],
                     "n_fit": [r["n_fit"] for r in reps], "n_holdout": [r["n_holdout"] for r in reps]})
    return rows


def markdown(res: dict) -> str:
    s = res["setup"]
    lines = [f"Table {s['table_name']}, early budget {s['early_steps']} of {s['full_steps']} steps: "
             f"{s['n_splits']} splits, test set {s['test_size']}, archive {s['archive_size']}, warm set W "
             f"(disjoint); Kendall tau on the test set, mean over splits [95% bootstrap CI].", "",
             "| warm W | fit / hold-out records (mean) | champion | last-loss | champion - last-loss | w/t/l "
             f"| champion - champion(W={s['warm_sizes'][0]}) | w/t/l | champion = v_last |",
             "|---|---|---|---|---|---|---|---|---|"]
    ci = lambda m, sign="": f"{m['mean']:{sign}.3f} [{m['ci95'][0]:{sign}.3f}, {m['ci95'][1]:{sign}.3f}]"  # noqa: E731
    wtl = lambda m: f"{m['wins']}/{m['ties']}/{m['losses']}"  # noqa: E731
    for r in res["results"]:
        d, b = r["female_minus_last_loss"], r["female_minus_no_warm"]
        lines.append(f"| {r['warm']} | {np.mean(r['n_fit']):.0f} / {np.mean(r['n_holdout']):.0f} | "
                     f"{ci(r['female'])} | {ci(r['last-loss'])} | {ci(d, '+')} | {wtl(d)} | "
                     f"{ci(b, '+')} | {wtl(b)} | {r['reference_chosen']}/{s['n_splits']} |")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------------
def parse(argv=None):
    ap = pt.parser(__doc__)
    ap.add_argument("--warm-sizes", default="0,100,250", help="warm records added to the archive")
    ap.add_argument("--archive-size", type=int, default=100, help="the search's own fully trained architectures")
    ap.add_argument("--test-size", type=int, default=150, help="test architectures per split")
    ap.add_argument("--splits", type=int, default=20)
    pt.add_gp_args(ap, "archive + warm", "females also see log n_params and log lr", "cells")
    ap.add_argument("--out", default=None, help="JSON (default benchmarks/results/warmstart_table.json)")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    a = parse(argv)
    from evo.table import Table
    from evo.warmstart import load_warm_start

    t_start = time.perf_counter()
    warm_sizes = pt._csv_list(a.warm_sizes, int, "--warm-sizes")
    if warm_sizes != sorted(set(warm_sizes)) or warm_sizes[0] < 0:
        raise ValueError(f"--warm-sizes must be distinct, increasing and >= 0, got {warm_sizes}")
    for name in ("splits", "pop", "gens", "archive_size", "test_size"):
        if getattr(a, name) < 2:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 2, got {getattr(a, name)}")
    table = Table(a.table)
    E, F = table.early_steps, table.full_steps
    prep = pt.prepare(table, [E], a.arch_features)
    N, names = len(prep["rows"]), prep["feature_names"]
    need = a.test_size + a.archive_size + warm_sizes[-1]
    if need > N:
        raise ValueError(f"test {a.test_size} + archive {a.archive_size} + warm {warm_sizes[-1]} = {need} rows; "
                         f"the table has {N} usable")
    X = prep["per_E"][E]["X"]
    warm_recs = load_warm_start(a.table, early_steps=E, full_steps=F, features=names)
    warm = {r.key.rsplit(":", 1)[1]: r for r in warm_recs}
    for j, aid in enumerate(prep["ids"]):  # the same features as the archive's, computed as a search does
        if not np.allclose([warm[aid].features[n] for n in names], X[j], rtol=1e-12, atol=0):
            raise AssertionError(f"warm features of {aid} differ from the benchmark's")
    data = {"ids": prep["ids"], "targets": prep["targets"], "X": X, "feature_names": names,
            "last_loss": prep["per_E"][E]["builtin"]["last-loss"], "warm": warm, "pop": a.pop, "gens": a.gens,
            "arch_features": a.arch_features}
    splits, tasks = [], []
    for s in range(a.splits):
        perm = np.random.default_rng([a.seed, s]).permutation(N)
        test, archive = np.sort(perm[N - a.test_size:]), np.sort(perm[:a.archive_size])
        pool = perm[a.archive_size:a.archive_size + warm_sizes[-1]]
        seed = int(np.random.SeedSequence([a.seed, s]).generate_state(1)[0])  # the same for every W
        splits.append({"test": [prep["ids"][j] for j in test], "archive": [prep["ids"][j] for j in archive],
                       "warm_pool": [prep["ids"][j] for j in pool]})
        for w in warm_sizes:
            tasks.append({"key": (s, w), "archive": archive, "warm": np.sort(pool[:w]), "test": test, "seed": seed})
    cells = pt.run_cells(run_cell, tasks, _init_worker, data, a.workers, t_start)
    res = {"setup": {"table": str(a.table), "table_name": table.meta.get("name", Path(a.table).name),
                     "full_steps": F, "early_steps": E, "n_usable": N, "n_excluded": len(prep["excluded"]),
                     "test_size": a.test_size, "archive_size": a.archive_size, "warm_sizes": warm_sizes,
                     "n_splits": a.splits, "seed": a.seed, "pop": a.pop, "gens": a.gens,
                     "arch_features": a.arch_features, "features": list(names), "bootstrap": pt.BOOTSTRAP},
           "results": summarise(cells, warm_sizes, a.splits, a.seed),
           "splits": splits,
           "timing": {"seconds": time.perf_counter() - t_start, "workers": a.workers,
                      "gp_seconds": sum(c["gp_seconds"] for c in cells.values())}}
    out = Path(a.out) if a.out else pt.RESULTS / "warmstart_table.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(markdown(res))
    print(f"\n{len(tasks)} cells in {res['timing']['seconds']:.0f} s with {a.workers} worker(s); written to {out}")
    return res


if __name__ == "__main__":
    pt.cli(main)
