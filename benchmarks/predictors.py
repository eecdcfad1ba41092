"""Rank quality of predictors of the final loss from early curves, on held-out tiny architectures.

Phase 1 (once, cached): train --n random architectures of the preset to the full budget through
evo.evaluate, keeping every per-step training loss and a validation loss every --eval-interval
steps, into a JSON archive of curves (committed, so the analysis reruns without training).
Phase 2: at each early fraction, score on held-out architectures (Kendall tau, Spearman against the
best val loss on the preset's own eval grid): last-loss, sotl, power-law (primitives/baselines.py),
a ridge regression on the curve features and an evolved female (GP on the fit part, champion by the
rule of docs/ALGORITHM.md). Splits: the engine's hash split, and --splits random fit/hold-out splits.

    python benchmarks/predictors.py --n 48 --workers 2 --data /path/to/input.txt
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from evo.config import Config
from evo.evaluate import EvalTask
from evo.executors import make_executor
from evo.genome import eval_seed
from evo.ledger import records_from_rows
from models.presets import get_preset
from primitives.baselines import BASELINES
from primitives.features import CURVE_FEATURES, curve_features
from primitives.fitness import holdout_mask, kendall_tau, spearman

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("last-loss", "sotl", "power-law", "ridge", "female")
ALPHAS = np.logspace(-3, 3, 13)


# -- phase 1: the archive of full curves ----------------------------------------------------------
def build_archive(path: Path, preset_name: str, n: int, seed: int, eval_interval: int, data: str | None,
                  workers: int, full_steps: int | None = None, log=print) -> dict:
    """Train the missing architectures of the archive (resumable: finished ones are kept)."""
    preset = dataclasses.replace(get_preset(preset_name), eval_interval=eval_interval)
    if full_steps is not None:
        preset = dataclasses.replace(preset, full_steps=full_steps)
    doc = json.loads(path.read_text()) if path.exists() else None
    want = {"preset": preset_name, "seed": seed, "eval_interval": eval_interval,
            "full_steps": preset.full_steps, "target_eval_interval": get_preset(preset_name).eval_interval,
            "preset_fields": preset_fields(get_preset(preset_name))}
    if doc is None or {k: doc.get(k) for k in want} != want:
        if doc is not None:
            diff = {k: doc.get(k) for k in want if doc.get(k) != want[k]}
            raise ValueError(f"{path} was built with other settings {diff}; pass another --archive")
        doc = {**want, "archs": []}
    rng = random.Random(seed)
    genes = [preset.sample(rng) for _ in range(n)]  # the same first k for every n
    done = {a["key"] for a in doc["archs"]}
    tasks = [EvalTask(key=f"a{i:03d}", genes=g, preset=preset, steps=preset.full_steps,
                      seed=eval_seed(seed, g), data=data, phase="straight")
             for i, g in enumerate(genes) if f"a{i:03d}" not in done]
    cfg = Config(mode="baseline", workers=workers, data=data, progress=False)
    t0 = time.perf_counter()
    with make_executor(cfg) as ex:
        for res in ex.run(tasks):
            task = next(t for t in tasks if t.key == res["key"])
            doc["archs"].append(_arch_row(task, res))
            doc["archs"].sort(key=lambda a: a["key"])
            _write(path, doc)
            log(f"{res['key']} best val {res.get('best_val_loss')} in {res.get('wall_time', 0):.1f} s "
                f"({len(doc['archs'])}/{n}, {time.perf_counter() - t0:.0f} s)")
    return doc


def preset_fields(preset) -> dict:
    """The preset as JSON (a changed preset must not reuse curves trained under the old one)."""
    return json.loads(json.dumps({**dataclasses.asdict(preset), "space": [repr(p) for p in preset.space]}))


def _arch_row(task: EvalTask, res: dict) -> dict:
    r6 = lambda xs: [None if x is None else round(x, 6) for x in xs or []]
    tps = res.get("tokens_per_s") or 0.0
    return {"key": task.key, "genes": task.genes, "seed": task.seed, "error": res.get("error"),
            "diverged": bool(res.get("diverged")), "n_params": res.get("n_params"),
            "flops": res.get("flops"), "wall_time": res.get("wall_time"),
            "train_time": (res.get("tokens") or 0) / tps if tps else None,
            "train_losses": r6(res.get("train_losses")), "eval_steps": res.get("eval_steps") or [],
            "val_losses": r6(res.get("val_losses"))}


def _write(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":")))
    tmp.replace(path)


# -- phase 2: predictors on held-out architectures --------------------------------------------------
def usable(doc: dict) -> list[dict]:
    """Finished, non-diverged architectures with the target on the preset's own eval grid."""
    F, grid = doc["full_steps"], doc["target_eval_interval"]
    out = []
    for a in doc["archs"]:
        if a["error"] or a["diverged"] or len(a["train_losses"]) != F:
            continue
        on_grid = [v for s, v in zip(a["eval_steps"], a["val_losses"]) if s % grid == 0 or s == F]
        out.append({**a, "target": min(on_grid)})
    return out


def early_inputs(arch: dict, E: int, F: int) -> dict:
    """Features and built-in predictions of one architecture at early budget E."""
    curve = (list(range(1, len(arch["train_losses"]) + 1)), arch["train_losses"],
             arch["eval_steps"], arch["val_losses"], E, F)
    return {"key": arch["key"], "target": arch["target"], "features": curve_features(*curve),
            "builtin": {name: fn(*curve) for name, fn in BASELINES.items()}}


def ridge_fit_predict(X_fit, y_fit, X_new, alphas=ALPHAS) -> tuple[np.ndarray, float]:
    """Ridge on standardised features, alpha by closed-form leave-one-out error on the fit part."""
    mu, sd = X_fit.mean(0), X_fit.std(0)
    keep = sd > 1e-12  # constant columns (early_frac) carry nothing
    Z, Zn = (X_fit[:, keep] - mu[keep]) / sd[keep], (X_new[:, keep] - mu[keep]) / sd[keep]
    ym = y_fit.mean()
    best = None
    for a in alphas:
        A = Z.T @ Z + a * np.eye(Z.shape[1])
        H = Z @ np.linalg.solve(A, Z.T)
        loo = (y_fit - ym - H @ (y_fit - ym)) / (1.0 - np.diag(H) - 1.0 / len(y_fit))
        err = float(np.mean(loo ** 2))
        if best is None or err < best[0]:
            best = (err, a)
    a = best[1]
    w = np.linalg.solve(Z.T @ Z + a * np.eye(Z.shape[1]), Z.T @ (y_fit - ym))
    return Zn @ w + ym, float(a)


def evolve_female(fit: list[dict], seed: int, pop: int, gens: int):
    """GP on the fit records (fixed seed); the champion by docs/ALGORITHM.md's rule."""
    from evo.females import Females

    random.seed(seed)
    np.random.seed(seed)
    fem = Females()
    fem.init(pop)
    fem.evolve(records_from_rows(fit), gens, pop)
    return fem, fem.champion()


def score_split(recs: list[dict], hold: np.ndarray, gp_seed: int, pop: int, gens: int) -> dict:
    """Hold-out Kendall tau and Spearman of every method on one fit/hold-out split."""
    fit = [r for r, h in zip(recs, hold) if not h]
    test = [r for r, h in zip(recs, hold) if h]
    y = np.array([r["target"] for r in test])
    preds = {name: np.array([r["builtin"][name] for r in test]) for name in BASELINES}
    names = [n for n in CURVE_FEATURES]
    X = lambda rs: np.array([[r["features"][n] for n in names] for r in rs])
    preds["ridge"], alpha = ridge_fit_predict(X(fit), np.array([r["target"] for r in fit]), X(test))
    fem, champ = evolve_female(fit, gp_seed, pop, gens)
    preds["female"] = fem.raw(champ, records_from_rows(test))
    out = {m: {"tau": kendall_tau(p, y), "spearman": spearman(p, y)} for m, p in preds.items()}
    out["ridge"]["alpha"] = alpha
    out["female"].update(tree=str(champ), fit_tau=champ.fitness.values[0])
    return out


def analyse(doc: dict, fracs, n_splits: int, seed: int, pop: int, gens: int, log=print) -> dict:
    """Scores at each early fraction: the hash split and n_splits random splits (mean, std)."""
    archs = usable(doc)
    F = doc["full_steps"]
    keys = [a["key"] for a in archs]
    n_hold = round(len(archs) / 3)
    rng = np.random.RandomState(seed)
    random_splits = []
    for _ in range(n_splits):
        m = np.zeros(len(archs), bool)
        m[rng.choice(len(archs), n_hold, replace=False)] = True
        random_splits.append(m)
    out = {"n_archs": len(archs), "n_diverged": len(doc["archs"]) - len(archs), "fracs": {}}
    for frac in fracs:
        E = max(1, round(frac * F))
        recs = [early_inputs(a, E, F) for a in archs]
        t0 = time.perf_counter()
        hash_split = score_split(recs, holdout_mask(keys), seed, pop, gens)
        reps = [score_split(recs, m, seed + 1 + i, pop, gens) for i, m in enumerate(random_splits)]
        agg = {}
        for meth in METHODS:
            for metric in ("tau", "spearman"):
                v = np.array([r[meth][metric] for r in reps])
                agg[f"{meth}/{metric}"] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
            agg[f"{meth}/wins_vs_last"] = int(sum(r[meth]["tau"] > r["last-loss"]["tau"] for r in reps))
        out["fracs"][str(frac)] = {"early_steps": E, "hash_split": hash_split,
                                   "hash_split_n_holdout": int(holdout_mask(keys).sum()),
                                   "random_splits": agg, "n_splits": n_splits, "n_holdout": n_hold}
        log(f"frac {frac}: done in {time.perf_counter() - t0:.0f} s")
    return out


def markdown(res: dict) -> str:
    """The results as a markdown table: hash-split tau, and mean ± std tau over random splits."""
    lines = [f"{res['n_archs']} architectures ({res['n_diverged']} diverged, excluded).", "",
             "| early | method | tau (hash split) | Spearman (hash split) | tau, random splits: mean ± std | "
             "Spearman, random splits | splits where tau > last-loss |",
             "|---|---|---|---|---|---|---|"]
    for frac, r in res["fracs"].items():
        for m in METHODS:
            h, a = r["hash_split"][m], r["random_splits"]
            lines.append(f"| {float(frac):.0%} ({r['early_steps']} steps) | {m} | {h['tau']:.3f} | "
                         f"{h['spearman']:.3f} | {a[m + '/tau']['mean']:.3f} ± {a[m + '/tau']['std']:.3f} | "
                         f"{a[m + '/spearman']['mean']:.3f} ± {a[m + '/spearman']['std']:.3f} | "
                         f"{a[m + '/wins_vs_last']}/{r['n_splits']} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--n", type=int, default=48, help="random architectures trained to the full budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-interval", type=int, default=10, help="val loss every this many steps")
    ap.add_argument("--fracs", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    ap.add_argument("--splits", type=int, default=20, help="random fit/hold-out splits")
    ap.add_argument("--pop", type=int, default=48, help="female population")
    ap.add_argument("--gens", type=int, default=40, help="GP generations per split")
    ap.add_argument("--full-steps", type=int, default=None, help="override the preset's full budget (quick runs)")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--data", default=None)
    ap.add_argument("--archive", default=None, help="curves JSON (default benchmarks/results/predictor_curves_<preset>.json)")
    ap.add_argument("--out", default=None, help="scores JSON (default benchmarks/results/predictors_<preset>.json)")
    ap.add_argument("--no-train", action="store_true", help="analyse the archive as it is")
    a = ap.parse_args(argv)
    for name in ("n", "eval_interval", "splits", "pop", "gens"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    for f in a.fracs:
        if not 0 < f < 1:
            raise ValueError(f"early fractions must be in (0, 1), got {f}")
    arch_path = Path(a.archive or RESULTS / f"predictor_curves_{a.preset}.json")
    if a.no_train:
        doc = json.loads(arch_path.read_text())
    else:
        doc = build_archive(arch_path, a.preset, a.n, a.seed, a.eval_interval, a.data, a.workers, a.full_steps)
    res = analyse(doc, a.fracs, a.splits, a.seed, a.pop, a.gens)
    res["settings"] = {k: v for k, v in vars(a).items() if k not in ("archive", "out", "data", "workers")}
    secs = [x["wall_time"] for x in doc["archs"] if x.get("wall_time")]
    flops = [x["flops"] for x in doc["archs"] if x.get("flops")]
    res["cost"] = {"mean_s": float(np.mean(secs)), "mean_flops": float(np.mean(flops)),
                   "mean_train_s": float(np.mean([x["train_time"] for x in doc["archs"] if x.get("train_time")]))}
    out = Path(a.out or RESULTS / f"predictors_{a.preset}.json")
    out.write_text(json.dumps(res, indent=1))
    print(markdown(res))
    return res


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
