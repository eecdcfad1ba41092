"""The female against regression peers and its own blends, on a tabular benchmark.

Same protocol as benchmarks/predictors_table.py (its splits, seeds, features and the female's GP
settings: the female column reproduces that table's), with these predictors:

    female       the champion of evo.females.Females evolved on the archive (the v_last rule)
    female-blend primitives.ensemble.choose: a non-negative least-squares blend of the top 5
                 distinct formulas replaces the champion only if it beats it on both the fit and
                 the held-out part of the archive (the champion rule); what evo.fit exports
    female-nnls  that blend always (when two members carry weight; else the champion)
    female-med3  the median of the top 3 distinct formulas, each calibrated, always
    gplearn      gplearn's SymbolicRegressor on the same features, Spearman fitness, run one
                 generation at a time until it has used as much wall time as the female's GP in
                 the same cell (equal wall time); its fitness is |Spearman|, so the program is
                 negated when it ranks the archive backwards
    ridge, lcsvr as in predictors_table.py (alpha by leave-one-out, C and gamma by 5-fold CV)
    hgb          sklearn's HistGradientBoostingRegressor (100 trees of depth 3, rate 0.1)
    last-loss    the last early validation loss

Mean Kendall tau over splits on the test set with 95% bootstrap CIs, and the paired differences
of the female columns against lcsvr, last-loss and gplearn. Per cell the features the champion
and the blend use are counted. Needs scikit-learn and gplearn (the `bench` extra).

    python benchmarks/predictor_peers.py --table benchmarks/tables/tiny
    python benchmarks/predictor_peers.py --table benchmarks/tables/arith --archive-sizes 30,100,200
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import predictors_table as pt  # noqa: E402
from evo.ledger import records_from_rows  # noqa: E402
from primitives import ensemble  # noqa: E402
from primitives.export import used_features  # noqa: E402
from primitives.fitness import kendall_tau  # noqa: E402

NAMES = ("female", "female-blend", "female-nnls", "female-med3", "gplearn", "ridge", "lcsvr", "hgb",
         "last-loss")
PAIRS = (("female", "lcsvr"), ("female-blend", "lcsvr"), ("female", "last-loss"),
         ("female-blend", "last-loss"), ("female", "gplearn"), ("female-blend", "gplearn"),
         ("female-blend", "female"), ("female-nnls", "female"), ("female-med3", "female"))
GPLEARN = dict(population_size=200, tournament_size=20, metric="spearman", parsimony_coefficient=0.001,
               function_set=("add", "sub", "mul", "div", "log", "sqrt", "neg", "max", "min"),
               const_range=(-1.0, 1.0), n_jobs=1)


def gplearn_equal_time(X_fit, y_fit, X_new, seed: int, seconds: float) -> tuple[np.ndarray, dict]:
    """SymbolicRegressor grown one generation at a time until `seconds` of wall time are used."""
    from gplearn.genetic import SymbolicRegressor

    t0 = time.perf_counter()
    m = SymbolicRegressor(generations=1, random_state=seed % 2 ** 31, warm_start=True, **GPLEARN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(X_fit, y_fit)
        while time.perf_counter() - t0 < seconds:
            m.set_params(generations=m.generations + 1)
            m.fit(X_fit, y_fit)
        with np.errstate(all="ignore"):
            p = np.nan_to_num(m.predict(X_new), nan=1e30, posinf=1e30, neginf=-1e30)
            # gplearn's correlation fitness is |correlation|: orient the program on the archive
            sign = 1.0 if kendall_tau(m.predict(X_fit), y_fit) >= 0 else -1.0
    return sign * p, {"generations": m.generations, "sign": sign, "seconds": time.perf_counter() - t0,
               "program": str(m._program), "length": int(m._program.length_)}


def hgb_fit_predict(X_fit, y_fit, X_new, seed: int) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingRegressor

    m = HistGradientBoostingRegressor(max_iter=100, max_depth=3, learning_rate=0.1,
                                      min_samples_leaf=5, early_stopping=False, random_state=seed % 2 ** 31)
    return m.fit(X_fit, y_fit).predict(X_new)


def run_cell(task: dict) -> dict:
    d = pt._DATA
    E, arch, test = task["E"], np.asarray(task["archive"]), np.asarray(task["test"])
    pe = d["prep"]["per_E"][E]
    y, ids, X = d["prep"]["targets"], d["prep"]["ids"], pe["X"]
    names = d["prep"]["feature_names"]
    recs = lambda idx: records_from_rows([{"key": ids[j], "target": float(y[j]),
                                           "features": dict(zip(names, X[j]))} for j in idx])
    preds, extra = {"last-loss": pe["builtin"]["last-loss"][test]}, {}
    t0 = time.perf_counter()
    fem, champ = pt.evolve_female(recs(arch), task["seed"], d["pop"], d["gens"], d["arch_features"])
    gp_seconds = time.perf_counter() - t0
    archive, test_recs = recs(arch), recs(test)
    preds["female"] = fem.raw(champ, test_recs)
    ch = ensemble.choose(fem, archive, "nnls")
    preds["female-blend"] = fem.raw(ch["tree"], test_recs)
    preds["female-nnls"] = fem.raw(ch["blend"]["tree"], test_recs) if ch["blend"] else preds["female"]
    med = ensemble.blend(fem, archive, "median3")
    preds["female-med3"] = fem.raw(med["tree"], test_recs) if med else preds["female"]
    extra["female"] = {"formula": str(champ), "size": len(champ), "gp_seconds": gp_seconds,
                       "features": used_features(champ, fem.pset),
                       "blend_chosen": ch["is_blend"], "blend_members": len(ch["blend"]["members"]) if ch["blend"] else 0,
                       "blend_features": used_features(ch["tree"], fem.pset)}
    preds["gplearn"], extra["gplearn"] = gplearn_equal_time(X[arch], y[arch], X[test], task["seed"], gp_seconds)
    preds["ridge"], _ = pt.ridge_fit_predict(X[arch], y[arch], X[test])
    preds["lcsvr"], _ = pt.svr_fit_predict(X[arch], y[arch], X[test], task["seed"])
    preds["hgb"] = hgb_fit_predict(X[arch], y[arch], X[test], task["seed"])
    return {"key": task["key"], "taus": {k: kendall_tau(p, y[test]) for k, p in preds.items()}, **extra}


def summarise(cells, fracs, steps, sizes, n_splits, seed) -> list[dict]:
    idx = np.random.default_rng([seed, 1_000_003]).integers(0, n_splits, size=(pt.BOOTSTRAP, n_splits))
    rows = []
    for f, E in zip(fracs, steps):
        for n in sizes:
            reps = [cells[(E, n, s)] for s in range(n_splits)]
            row = {"early_frac": f, "early_steps": E, "archive_size": n, "predictors": {}, "diffs": {}}
            for p in NAMES:
                t = [r["taus"][p] for r in reps]
                row["predictors"][p] = {"mean": float(np.mean(t)), "ci95": pt.bootstrap_ci(t, idx),
                                        "taus": [float(x) for x in t]}
            for a, b in PAIRS:
                dd = [r["taus"][a] - r["taus"][b] for r in reps]
                row["diffs"][f"{a} - {b}"] = {"mean": float(np.mean(dd)), "ci95": pt.bootstrap_ci(dd, idx),
                                              "wins": int(sum(x > 0 for x in dd)),
                                              "losses": int(sum(x < 0 for x in dd))}
            fe = [r["female"] for r in reps]
            row["female"] = {"formulas": [x["formula"] for x in fe], "sizes": [x["size"] for x in fe],
                             "blend_chosen": int(sum(x["blend_chosen"] for x in fe)),
                             "gp_seconds": float(np.mean([x["gp_seconds"] for x in fe]))}
            row["gplearn"] = {"generations": float(np.mean([r["gplearn"]["generations"] for r in reps])),
                              "seconds": float(np.mean([r["gplearn"]["seconds"] for r in reps])),
                              "lengths": [r["gplearn"]["length"] for r in reps]}
            rows.append(row)
    return rows


def markdown(res: dict) -> str:
    s = res["setup"]
    lines = [f"Table {s['table']}: {s['n_usable']} usable, test set {s['test_size']}, {s['n_splits']} splits; "
             "mean Kendall tau [95% CI]", "",
             "| early | archive | " + " | ".join(NAMES) + " | blend chosen | gplearn gens |",
             "|---" * (len(NAMES) + 4) + "|"]
    for r in res["results"]:
        best = max(r["predictors"][p]["mean"] for p in NAMES)
        cells = [(f"**{m['mean']:.3f}**" if m["mean"] == best else f"{m['mean']:.3f}")
                 for m in (r["predictors"][p] for p in NAMES)]
        lines.append(f"| {r['early_frac']:g} | {r['archive_size']} | " + " | ".join(cells)
                     + f" | {r['female']['blend_chosen']}/{s['n_splits']} | {r['gplearn']['generations']:.1f} |")
    lines += ["", "| early | archive | " + " | ".join(f"{a} - {b}" for a, b in PAIRS) + " |",
              "|---" * (len(PAIRS) + 2) + "|"]
    for r in res["results"]:
        cells = [f"{v['mean']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]"
                 for v in (r["diffs"][f"{a} - {b}"] for a, b in PAIRS)]
        lines.append(f"| {r['early_frac']:g} | {r['archive_size']} | " + " | ".join(cells) + " |")
    lines += ["", "features used by the champions / the exported (blend-or-champion) formulas, all cells: "
              + json.dumps(res["feature_counts"])]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = pt.parser(__doc__)
    ap.add_argument("--early-fracs", default="0.05,0.1,0.2")
    ap.add_argument("--archive-sizes", default="30,100,300")
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--test-size", type=int, default=None)
    pt.add_gp_args(ap, "the archive", "every predictor also sees log n_params and log lr", "cells")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    from evo.table import Table

    t_start = time.perf_counter()
    fracs = pt._csv_list(a.early_fracs, float, "--early-fracs")
    sizes = pt._csv_list(a.archive_sizes, int, "--archive-sizes")
    if a.splits < 2 or len(set(sizes)) != len(sizes) or min(sizes) < 5:
        raise ValueError(f"need --splits >= 2 and distinct --archive-sizes >= 5, got {a.splits}, {sizes}")
    table = Table(a.table)
    F = table.full_steps
    steps = [round(f * F) for f in fracs]
    if not all(0 < f < 1 and 1 <= E < F for f, E in zip(fracs, steps)) or len(set(steps)) != len(steps):
        raise ValueError(f"--early-fracs {fracs} give early budgets {steps}; need distinct 1 <= E < {F}")
    prep = pt.prepare(table, steps, a.arch_features)
    N = len(prep["rows"])
    room = N - max(sizes)
    test_size = min(pt.DEFAULT_TEST_CAP, room) if a.test_size is None else a.test_size
    if not 2 <= test_size <= room:
        raise ValueError(f"{N} usable architectures leave {room} outside the largest archive; "
                         f"the test set needs 2 to {room}, got {test_size}")
    tasks = []
    for s in range(a.splits):  # the splits and seeds of predictors_table.py
        perm = np.random.default_rng([a.seed, s]).permutation(N)
        test = np.sort(perm[N - test_size:])
        for E in steps:
            for n in sizes:
                seed = int(np.random.SeedSequence([a.seed, s, n, E]).generate_state(1)[0])
                tasks.append({"key": (E, n, s), "E": E, "archive": np.sort(perm[:n]), "test": test, "seed": seed})
    data = {"prep": prep, "pop": a.pop, "gens": a.gens, "arch_features": a.arch_features, "sklearn": True}
    cells = pt.run_cells(run_cell, tasks, pt._init_worker, data, a.workers, t_start)
    champ_feats = Counter(f for c in cells.values() for f in c["female"]["features"])
    blend_feats = Counter(f for c in cells.values() for f in c["female"]["blend_features"])
    res = {"predictors": list(NAMES),
           "setup": {"table": str(a.table), "full_steps": F, "n_usable": N, "test_size": test_size,
                     "n_splits": a.splits, "early_fracs": fracs, "early_steps": steps, "archive_sizes": sizes,
                     "seed": a.seed, "pop": a.pop, "gens": a.gens, "arch_features": a.arch_features,
                     "features": list(prep["feature_names"]), "gplearn": {k: (list(v) if isinstance(v, tuple)
                                                                              else v) for k, v in GPLEARN.items()}},
           "results": summarise(cells, fracs, steps, sizes, a.splits, a.seed),
           "feature_counts": {"champion": dict(champ_feats.most_common()),
                              "exported": dict(blend_feats.most_common()), "cells": len(cells)},
           "timing": {"seconds": time.perf_counter() - t_start, "workers": a.workers}}
    name = Path(a.table).resolve().name + ("_meta" if a.arch_features else "")
    out = Path(a.out) if a.out else pt.RESULTS / f"predictor_peers_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(markdown(res))
    print(f"\n{len(tasks)} cells in {res['timing']['seconds']:.0f} s; written to {out}")
    return res


if __name__ == "__main__":
    pt.cli(main)
