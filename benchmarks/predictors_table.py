"""Rank quality of final-loss predictors from early curves, on a tabular benchmark.

For each early fraction f (early budget E = round(f * full_steps)), each archive size n and each
split, n architectures of the table are the archive (what a predictor may fit on) and a disjoint
set is the test set; every predictor ranks the test set from early curves (training losses and
validation points with step <= E) and is scored by Kendall tau-b against the table's target (the
best validation loss over the full budget). The test set of a split is the same for every f and n,
and the archives of a split are nested (the first n of one permutation), so every comparison
between predictors, fractions and archive sizes is paired.

Predictors (lower prediction = better predicted final loss):

    female      the project's own female evolution (evo.females.Females: init, evolve, champion,
                with its hash fit/hold-out split of the archive and the v_last reference rule),
                run on the archive only
    last-loss   the last early validation loss (the `v_last` feature)
    lin-extrap  the line through the last two early validation points, at full_steps
    sotl        sum of the early training losses (primitives.baselines.sotl)
    sotl-e      sum of the training losses in the last 25% of the early budget (step > 0.75 E)
    power-law   a * step^-b + c fitted to the early training curve, at full_steps
                (primitives.baselines.power_law)
    ridge       ridge regression on the standardised curve features, alpha by exact
                leave-one-out error on the archive
    lcsvr       RBF-kernel SVR on the standardised curve features (Baker et al. 2017,
                arXiv:1705.10823), C and gamma by 5-fold CV on the archive (needs scikit-learn)

Per (f, n, predictor): mean tau over splits with a 95% bootstrap CI (splits resampled), and the
paired difference female - last-loss with its CI. Deterministic per --seed, whatever --workers.

    python benchmarks/predictors_table.py --table benchmarks/tables/tiny
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make evo/ and primitives/ importable
    sys.path.insert(0, str(ROOT))

from evo.ledger import records_from_rows  # noqa: E402
from primitives.baselines import power_law, sotl  # noqa: E402
from primitives.features import ARCH_FEATURES, CURVE_FEATURES, curve_features  # noqa: E402
from primitives.fitness import kendall_tau  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PREDICTORS = ("female", "last-loss", "lin-extrap", "sotl", "sotl-e", "power-law", "ridge", "lcsvr")
SOTL_E_FRAC = 0.25                   # sotl-e sums the training losses of the last quarter of E
RIDGE_ALPHAS = np.logspace(-3, 3, 13)
SVR_C = (0.3, 3.0, 30.0)
SVR_GAMMA = (0.3, 1.0, 3.0)          # times 1 / n_features (the features are standardised)
SVR_FOLDS = 5
BOOTSTRAP = 10000
DEFAULT_TEST_CAP = 200


# -- early inputs of every architecture ---------------------------------------------------------
def _finite(curve, upto: int):
    s, v = curve
    keep = (s <= upto) & np.isfinite(v)
    return s[keep], v[keep]


def lin_extrap(val_steps, val_losses, full_steps: int) -> float:
    """The line through the last two validation points, evaluated at full_steps (one point: it)."""
    if len(val_steps) < 2:
        return float(val_losses[-1])
    (s1, s2), (v1, v2) = val_steps[-2:], val_losses[-2:]
    return float(v2 + (v2 - v1) / (s2 - s1) * (full_steps - s2))


def sotl_e(train_steps, train_losses, early_steps: int) -> float:
    """Sum of the training losses with step in (E - SOTL_E_FRAC * E, E]."""
    keep = train_steps > early_steps * (1.0 - SOTL_E_FRAC)
    return float(train_losses[keep].sum())


def early_inputs(table, i: int, E: int, lr_col: int | None) -> dict:
    """Features and built-in predictions of row i at early budget E (ValueError if unusable)."""
    F = table.full_steps
    if table.last_step(i) < E:  # the search never ranks an early training that failed
        raise ValueError(f"architecture {table.ids[i]}: training ends at step {table.last_step(i)}, "
                         f"before the early budget {E}")
    for split in ("train", "val"):
        s, v = table.curves[i][split]
        if not np.isfinite(v[s <= E]).all():
            raise ValueError(f"architecture {table.ids[i]}: a non-finite {split} loss at step <= {E}")
    ts, tv = _finite(table.curves[i]["train"], E)
    vs, vv = _finite(table.curves[i]["val"], E)
    n_params = float(table.n_params[i])
    lr = float(table.gene_values[i, lr_col]) if lr_col is not None else None
    feats = curve_features(ts, tv, vs, vv, E, F, n_params=n_params if n_params > 0 else None,
                           lr=lr if lr is not None and lr > 0 else None)
    if not len(vs):
        raise ValueError(f"architecture {table.ids[i]}: no validation point at step <= {E}")
    preds = {"last-loss": feats["v_last"], "lin-extrap": lin_extrap(vs, vv, F),
             "sotl": sotl(ts, tv, vs, vv, E, F), "sotl-e": sotl_e(ts, tv, E),
             "power-law": power_law(ts, tv, vs, vv, E, F)}
    if not all(math.isfinite(x) for x in [*feats.values(), *preds.values()]):
        raise ValueError(f"architecture {table.ids[i]}: a non-finite feature or prediction at E={E}")
    return {"features": feats, "builtin": preds}


def prepare(table, steps: list[int], arch_features: bool) -> dict:
    """Per early budget: feature matrix and built-in predictions of the usable architectures.

    Usable: a finite target and finite early inputs at every early budget, so the pool (and so
    every split) is the same for every fraction."""
    lr_col = table.genes.index("lr") if "lr" in table.genes else None
    feat_names = tuple(CURVE_FEATURES) + (tuple(ARCH_FEATURES) if arch_features else ())
    if arch_features and (lr_col is None or not all(x > 0 for x in table.n_params)):
        raise ValueError("--arch-features needs an 'lr' gene and positive n_params in the table")
    usable, inputs, excluded = [], {E: [] for E in steps}, {}
    for i in range(len(table.ids)):
        if not math.isfinite(table.targets[i]):
            excluded[table.ids[i]] = "no finite validation loss"
            continue
        try:
            row = {E: early_inputs(table, i, E, lr_col) for E in steps}
        except ValueError as e:
            excluded[table.ids[i]] = str(e)
            continue
        usable.append(i)
        for E in steps:
            inputs[E].append(row[E])
    per_E = {}
    for E in steps:
        recs = inputs[E]
        per_E[E] = {"X": np.array([[r["features"][n] for n in feat_names] for r in recs]),
                    "builtin": {k: np.array([r["builtin"][k] for r in recs]) for k in recs[0]["builtin"]}
                    if recs else {}}
    return {"rows": usable, "ids": [table.ids[i] for i in usable],
            "targets": np.array([table.targets[i] for i in usable]), "feature_names": feat_names,
            "per_E": per_E, "excluded": excluded}


# -- fitted predictors ---------------------------------------------------------------------------
def _standardise(X_fit, X_new):
    mu, sd = X_fit.mean(0), X_fit.std(0)
    keep = sd > 1e-12  # constant columns (early_frac) carry nothing
    return (X_fit[:, keep] - mu[keep]) / sd[keep], (X_new[:, keep] - mu[keep]) / sd[keep]


def ridge_fit_predict(X_fit, y_fit, X_new, alphas=RIDGE_ALPHAS) -> tuple[np.ndarray, float]:
    """Ridge on standardised features; alpha by the closed-form leave-one-out error (the centring
    of y is refitted in each fold, hence the -1/n in the leverage)."""
    Z, Zn = _standardise(X_fit, X_new)
    ym = y_fit.mean()
    yc = y_fit - ym
    n = len(y_fit)
    best = None
    for a in alphas:
        A = Z.T @ Z + a * np.eye(Z.shape[1])
        H = Z @ np.linalg.solve(A, Z.T)
        loo = (yc - H @ yc) / (1.0 - np.diag(H) - 1.0 / n)
        err = float(np.mean(loo ** 2))
        if best is None or err < best[0]:
            best = (err, float(a))
    a = best[1]
    w = np.linalg.solve(Z.T @ Z + a * np.eye(Z.shape[1]), Z.T @ yc)
    return Zn @ w + ym, a


def svr_fit_predict(X_fit, y_fit, X_new, seed: int) -> tuple[np.ndarray, dict]:
    """RBF SVR on standardised features and target; (C, gamma) by K-fold CV (MSE) on the archive."""
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.svm import SVR

    Z, Zn = _standardise(X_fit, X_new)
    ym, ys = y_fit.mean(), y_fit.std()
    ys = ys if ys > 0 else 1.0
    d = max(1, Z.shape[1])
    grid = {"C": list(SVR_C), "gamma": [g / d for g in SVR_GAMMA]}
    folds = KFold(n_splits=min(SVR_FOLDS, len(y_fit)), shuffle=True, random_state=seed % 2 ** 31)
    search = GridSearchCV(SVR(kernel="rbf", epsilon=0.1), grid, cv=folds,
                          scoring="neg_mean_squared_error", n_jobs=1)
    search.fit(Z, (y_fit - ym) / ys)
    return search.predict(Zn) * ys + ym, {"C": search.best_params_["C"],
                                           "gamma": round(search.best_params_["gamma"] * d, 6)}


def have_sklearn() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def evolve_female(archive: list, seed: int, pop: int, gens: int, arch_features: bool):
    """The search's female evolution on the archive: init, evolve, champion (fixed seed)."""
    from evo.females import Females

    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    fem = Females(arch_features=arch_features)
    fem.init(pop)
    fem.evolve(archive, gens, pop)
    return fem, fem.champion()


# -- one (fraction, archive size, split) cell ----------------------------------------------------
_DATA: dict = {}


def _init_worker(data: dict) -> None:
    _DATA.clear()
    _DATA.update(data)


def run_cell(task: dict) -> dict:
    """Test-set Kendall tau of every predictor for one (early budget, archive, test set)."""
    d = _DATA
    E, arch, test = task["E"], np.asarray(task["archive"]), np.asarray(task["test"])
    pe = d["prep"]["per_E"][E]
    y = d["prep"]["targets"]
    ids = d["prep"]["ids"]
    X = pe["X"]
    preds = {k: pe["builtin"][k][test] for k in ("last-loss", "lin-extrap", "sotl", "sotl-e", "power-law")}
    extra = {}
    preds["ridge"], extra["ridge_alpha"] = ridge_fit_predict(X[arch], y[arch], X[test])
    if d["sklearn"]:
        preds["lcsvr"], extra["svr"] = svr_fit_predict(X[arch], y[arch], X[test], task["seed"])
    names = d["prep"]["feature_names"]
    recs = lambda idx: records_from_rows([{"key": ids[j], "target": float(y[j]), "features": dict(zip(names, X[j]))}
                                          for j in idx])
    t0 = time.perf_counter()
    fem, champ = evolve_female(recs(arch), task["seed"], d["pop"], d["gens"], d["arch_features"])
    preds["female"] = fem.raw(champ, recs(test))
    extra["female"] = {"formula": str(champ), "is_reference": str(champ) == "v_last",
                       "fit_tau": float(champ.fitness.values[0]),
                       "holdout_tau": float(getattr(champ, "holdout_tau", float("nan"))),
                       "gp_seconds": time.perf_counter() - t0}
    taus = {k: kendall_tau(p, y[test]) for k, p in preds.items()}
    return {"key": task["key"], "taus": taus, **extra}


# -- statistics ------------------------------------------------------------------------------------
def bootstrap_ci(values, idx: np.ndarray) -> list[float]:
    """95% percentile CI of the mean of values over bootstrap resamples idx (B x n_splits)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return [float(v.mean()), float(v.mean())]
    means = v[idx].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def summarise(cells: dict, fracs, steps, sizes, n_splits: int, names, seed: int) -> list[dict]:
    idx = np.random.default_rng([seed, 1_000_003]).integers(0, n_splits, size=(BOOTSTRAP, n_splits))
    rows = []
    for f, E in zip(fracs, steps):
        for n in sizes:
            reps = [cells[(E, n, s)] for s in range(n_splits)]
            row = {"early_frac": f, "early_steps": E, "archive_size": n, "n_splits": n_splits, "predictors": {}}
            for p in names:
                t = [r["taus"][p] for r in reps]
                row["predictors"][p] = {"mean": float(np.mean(t)), "ci95": bootstrap_ci(t, idx),
                                        "std": float(np.std(t, ddof=1)) if len(t) > 1 else 0.0,
                                        "taus": [float(x) for x in t]}
            diff = [r["taus"]["female"] - r["taus"]["last-loss"] for r in reps]
            row["female_minus_last_loss"] = {
                "mean": float(np.mean(diff)), "ci95": bootstrap_ci(diff, idx),
                "wins": int(sum(x > 0 for x in diff)), "ties": int(sum(x == 0 for x in diff)),
                "losses": int(sum(x < 0 for x in diff))}
            row["female"] = {"formulas": [r["female"]["formula"] for r in reps],
                             "reference_chosen": int(sum(r["female"]["is_reference"] for r in reps)),
                             "fit_tau": [r["female"]["fit_tau"] for r in reps],
                             "holdout_tau": [r["female"]["holdout_tau"] for r in reps]}
            row["ridge_alpha"] = [r["ridge_alpha"] for r in reps]
            if "lcsvr" in names:
                row["svr_params"] = [r["svr"] for r in reps]
            rows.append(row)
    return rows


def markdown(res: dict) -> str:
    names = res["predictors"]
    s = res["setup"]
    lines = [f"Table {s['table']}: {s['n_usable']} usable architectures ({s['n_excluded']} excluded), "
             f"test set {s['test_size']} per split, {s['n_splits']} splits; Kendall tau on the test set, "
             f"mean over splits [95% bootstrap CI].", "",
             "| early | archive | " + " | ".join(names) + " | female - last-loss | wins/ties/losses |",
             "|---" * (len(names) + 4) + "|"]
    for r in res["results"]:
        cells = []
        best = max(r["predictors"][p]["mean"] for p in names)
        for p in names:
            m = r["predictors"][p]
            txt = f"{m['mean']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"
            cells.append(f"**{txt}**" if m["mean"] == best else txt)
        d = r["female_minus_last_loss"]
        lines.append(f"| {r['early_frac']:g} ({r['early_steps']} steps) | {r['archive_size']} | " + " | ".join(cells)
                     + f" | {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] | "
                       f"{d['wins']}/{d['ties']}/{d['losses']} |")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------
def _csv_list(text: str, kind, what: str) -> list:
    try:
        out = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what} must be a comma-separated list, got {text!r}") from None
    if not out:
        raise ValueError(f"{what} is empty")
    return out


def run_cells(fn, tasks: list, init, data, workers: int, t_start: float) -> dict:
    """fn over tasks (each worker first runs init(data)), in `workers` processes or in this one:
    {result["key"]: result}, with a progress line per result."""
    cells = {}
    if workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers, initializer=init, initargs=(data,)) as pool:
            for k, r in enumerate(pool.imap_unordered(fn, tasks), 1):
                cells[r["key"]] = r
                _progress(k, len(tasks), t_start)
    else:
        init(data)
        for k, t in enumerate(tasks, 1):
            r = fn(t)
            cells[r["key"]] = r
            _progress(k, len(tasks), t_start)
    return cells


def parser(doc: str) -> argparse.ArgumentParser:
    """The parser both table benchmarks start from: --table."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    ap.add_argument("--table", default=str(ROOT / "benchmarks" / "tables" / "tiny"), help="table directory")
    return ap


def add_gp_args(ap: argparse.ArgumentParser, gp_on: str, arch_help: str, workers_over: str) -> None:
    """The options both table benchmarks share: seed, the GP's population and generations, features, workers."""
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pop", type=int, default=48, help="female population (the search's --females default)")
    ap.add_argument("--gens", type=int, default=40, help=f"GP generations on {gp_on}")
    ap.add_argument("--arch-features", action="store_true", help=arch_help)
    ap.add_argument("--workers", type=int, default=2, help=f"processes over {workers_over} (0 or 1: in this process)")


def parse(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--early-fracs", default="0.05,0.1,0.2", help="early budgets as fractions of full_steps")
    ap.add_argument("--archive-sizes", default="30,100,300", help="architectures a predictor may fit on")
    ap.add_argument("--splits", type=int, default=20, help="random archive/test draws per archive size")
    ap.add_argument("--test-size", type=int, default=None,
                    help=f"test architectures per split (default: those outside the largest archive, "
                         f"at most {DEFAULT_TEST_CAP})")
    add_gp_args(ap, "the archive", "female, ridge and lcsvr also see log n_params and log lr", "splits")
    ap.add_argument("--out", default=None, help="JSON (default benchmarks/results/predictors_table_<name>.json)")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    a = parse(argv)
    from evo.table import Table

    t_start = time.perf_counter()
    fracs = _csv_list(a.early_fracs, float, "--early-fracs")
    sizes = _csv_list(a.archive_sizes, int, "--archive-sizes")
    for name in ("splits", "pop", "gens"):
        if getattr(a, name) < (2 if name == "pop" else 1):
            raise ValueError(f"--{name} must be >= {2 if name == 'pop' else 1}, got {getattr(a, name)}")
    if len(set(sizes)) != len(sizes) or min(sizes) < 5:
        raise ValueError(f"--archive-sizes must be distinct and >= 5, got {sizes}")
    table = Table(a.table)
    F = table.full_steps
    steps = []
    for f in fracs:
        E = round(f * F)
        if not 0 < f < 1 or not 1 <= E < F:
            raise ValueError(f"early fraction {f} gives {E} early steps; need 1 <= E < full_steps={F}")
        steps.append(E)
    if len(set(steps)) != len(steps):
        raise ValueError(f"--early-fracs {fracs} give repeated early budgets {steps}")
    prep = prepare(table, steps, a.arch_features)
    N = len(prep["rows"])
    room = N - max(sizes)
    test_size = min(DEFAULT_TEST_CAP, room) if a.test_size is None else a.test_size
    if test_size < 2 or test_size > room:
        raise ValueError(f"{N} usable architectures leave {room} outside the largest archive "
                         f"({max(sizes)}); the test set needs 2 to {room}, got {test_size}")
    sk = have_sklearn()
    names = [p for p in PREDICTORS if sk or p != "lcsvr"]
    if not sk:
        print("scikit-learn is not installed: lcsvr is left out", file=sys.stderr)

    n_splits = a.splits
    splits, tasks = [], []
    for s in range(n_splits):
        perm = np.random.default_rng([a.seed, s]).permutation(N)
        test = np.sort(perm[N - test_size:])
        splits.append({"test": [prep["ids"][j] for j in test],
                       "archives": {str(n): [prep["ids"][j] for j in np.sort(perm[:n])] for n in sizes}})
        for E in steps:
            for n in sizes:
                seed = int(np.random.SeedSequence([a.seed, s, n, E]).generate_state(1)[0])
                tasks.append({"key": (E, n, s), "E": E, "archive": np.sort(perm[:n]), "test": test, "seed": seed})
    data = {"prep": prep, "pop": a.pop, "gens": a.gens, "arch_features": a.arch_features, "sklearn": sk}
    cells = run_cells(run_cell, tasks, _init_worker, data, a.workers, t_start)

    res = {"predictors": names,
           "setup": {"table": str(a.table), "table_name": table.meta.get("name", Path(a.table).name),
                     "full_steps": F, "n_archs": len(table.ids), "n_usable": N,
                     "n_excluded": len(prep["excluded"]), "excluded": prep["excluded"],
                     "test_size": test_size, "n_splits": n_splits, "early_fracs": fracs, "early_steps": steps,
                     "archive_sizes": sizes, "seed": a.seed, "pop": a.pop, "gens": a.gens,
                     "arch_features": a.arch_features, "features": list(prep["feature_names"]),
                     "bootstrap": BOOTSTRAP},
           "results": summarise(cells, fracs, steps, sizes, n_splits, names, a.seed),
           "splits": splits,
           "timing": {"seconds": time.perf_counter() - t_start, "workers": a.workers,
                      "gp_seconds": sum(c["female"]["gp_seconds"] for c in cells.values())}}
    name = Path(a.table).resolve().name
    out = Path(a.out) if a.out else RESULTS / f"predictors_table_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(markdown(res))
    print(f"\n{len(tasks)} cells in {res['timing']['seconds']:.0f} s with {a.workers} worker(s); written to {out}")
    return res


def _progress(k: int, n: int, t0: float) -> None:
    if k % 10 == 0 or k == n:
        el = time.perf_counter() - t0
        print(f"{k}/{n} cells | {el:.0f} s | eta {el / k * (n - k):.0f} s", file=sys.stderr, flush=True)


def cli(main) -> None:
    """Run a benchmark's main; a bad option or table (ValueError, TableError included) is one line and exit code 2."""
    try:
        main()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli(main)
