"""`python -m evo.fit`: evolve a final-loss predictor on your own learning curves.

python -m evo.fit --curves curves.csv --finals finals.csv --early-steps 60 --full-steps 600 \
    [--meta meta.csv] [--seed 0] [--pop 64] [--gens 60] [--max-seconds S] [--test-frac 0.3] \
    --out DIR

The input files are those of `evo.predict` (README "The CSV format of `evo.predict`"), read by the
same readers, so bad input exits with 2 and one line `FILE:LINE: problem`. Curves without a final
are left out of the fit.

What it does, in order:
1. The curves with a final are split by a stable hash of their curve_id: the `--test-frac` with the
   smallest hash are the held-out TEST part, which nothing below fits on or selects with.
2. On the rest, the female population of the search (evo.females.Females: init, evolve, champion) is
   evolved for `--gens` generations: fitness is Kendall tau on its own fit part, and the champion is
   the reference rule `v_last` (the last early validation loss) unless a top formula beats it on
   both its fit part and its internal hold-out part (docs/ALGORITHM.md).
   With --blend nnls (the default) a non-negative weighted sum of the top distinct formulas
   (primitives.ensemble) replaces that champion only if it beats it on both parts; it is one tree.
3. An affine map a * formula + b (least squares on the training part, a > 0) makes the predictions
   losses, the 10%/90% quantiles of its training residuals an 80% interval; the formula is exported
   (primitives.export: tree, sympy text, LaTeX, calibration, interval, budgets) to DIR/predictor.json,
   .txt, .tex.
4. The exported file is loaded back and scored on the TEST part next to last-loss, SoTL and
   power-law (primitives.baselines); DIR/report.json holds the numbers and the split, DIR/front.json
   every formula of the accuracy-against-size front (each one a predictor file).

Deterministic per --seed (the same predictor.json byte for byte; report.json differs only in its
"seconds"), unless --max-seconds stops the evolution early (the report says after how many
generations).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from evo.seeding import seed_everything
from evo.predict import InputError, _finite, check_budget_flags, parse_args_or_exit_code, read_curves, read_table
from primitives import ensemble
from primitives.baselines import BASELINES
from primitives.features import curve_features
from primitives.fitness import _unit_hash, calibrate, kendall_tau, spearman
from primitives.pset import BIG

PROG = "python -m evo.fit"
DEFAULT_POP, DEFAULT_GENS, DEFAULT_TEST_FRAC = 64, 60, 0.3
MIN_TRAIN, MIN_TEST = 6, 3
"""fewest curves with a final in the training part (the champion rule splits it again) and in the
test part (a tau over fewer pairs says nothing)"""
SPLIT_SALT = "evo.fit/test:"
"""salt of the test split's hash, so it is independent of the Females' own fit/hold-out split"""
BASELINE_NAMES = ("last-loss", "sotl", "power-law")
BLENDS = ("nnls", "median3", "none")
DEFAULT_BLEND = "nnls"


def member_sympy(tree_text: str, pset) -> str:
    """Plain sympy text of one tree (a blend's member, a front member), unsimplified."""
    from primitives.export import plain_sympy, to_sympy
    from primitives.gp import tree_from_string

    return str(plain_sympy(to_sympy(tree_from_string(tree_text, pset), pset)))


def split_test(ids: list[str], frac: float) -> np.ndarray:
    """True for the test part: the round(frac * n) ids (at least MIN_TEST) with the smallest salted
    sha256 hash. Depends only on the ids, not on their order or the seed."""
    n_test = max(MIN_TEST, int(round(frac * len(ids))))
    order = sorted(range(len(ids)), key=lambda i: (_unit_hash(SPLIT_SALT + ids[i]), ids[i]))
    mask = np.zeros(len(ids), dtype=bool)
    mask[order[:n_test]] = True
    return mask


def positive_calibration(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(a, b) with a > 0, target ~ a * pred + b: least squares (primitives.fitness.calibrate), or,
    when its slope is not positive (it would reverse the ranking), the map that matches the mean and
    spread of the targets; a = 1 for a constant prediction."""
    a, b = calibrate(pred, target)
    if a > 0 and math.isfinite(a) and math.isfinite(b):
        return a, b
    ok = np.isfinite(pred) & (np.abs(pred) < BIG)
    p, t = pred[ok], target[ok]
    a = float(t.std() / p.std()) if p.std() > 0 else 1.0
    return a, float(t.mean() - a * p.mean())


class Progress:
    """A tqdm bar on a terminal (stderr), plain lines otherwise (about ten per run), or nothing."""

    def __init__(self, total: int, enabled: bool = True, stream=None):
        self.total, self.stream = total, stream or sys.stderr
        self.enabled = enabled
        isatty = getattr(self.stream, "isatty", None)
        self.bar = None
        if enabled and isatty and isatty():
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc="generations", unit="gen", file=self.stream)
        self.every = max(1, total // 10)

    def update(self, gen: int, best_tau: float, champion: str, elapsed: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(best=f"{best_tau:.3f}", champion=champion[:24])
            self.bar.update(1)
        elif gen % self.every == 0 or gen == self.total:
            print(f"generation {gen}/{self.total}: best fit tau {best_tau:.4f}, champion "
                  f"{champion[:60]}, {elapsed:.1f} s", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def features_of(curves: dict, ids: list[str], early_steps: int, full_steps: int, curves_path: str,
                meta: dict | None, meta_path: str | None) -> list[dict]:
    """Feature dicts of the given curves (arch features too with meta); InputError on a bad curve."""
    out = []
    for cid in ids:
        c = curves[cid]
        n_params = lr = None
        if meta is not None:
            if cid not in meta:
                raise InputError(f"{meta_path}: no row for curve {cid!r}; with --meta every curve "
                                 f"with a final needs one")
            n_params, lr = meta[cid]
        with np.errstate(all="ignore"):
            feats = curve_features(*c["train"], *c["val"], early_steps, full_steps,
                                   n_params=n_params, lr=lr)
        for name, v in feats.items():
            _finite(v, f"feature {name!r}", cid, curves_path, c["line"])
        out.append(feats)
    return out


def baseline_predictions(curves: dict, ids: list[str], early_steps: int, full_steps: int,
                         curves_path: str) -> dict[str, np.ndarray]:
    """last-loss, sotl and power-law predictions of the given curves."""
    out = {}
    for name in BASELINE_NAMES:
        func, preds = BASELINES[name], []
        for cid in ids:
            c = curves[cid]
            with np.errstate(all="ignore"):
                p = func(*c["train"], *c["val"], early_steps, full_steps)
            preds.append(_finite(p, f"the {name} prediction", cid, curves_path, c["line"]))
        out[name] = np.array(preds)
    return out


def fit(curves: dict, finals: dict, early_steps: int, full_steps: int, meta: dict | None = None,
        seed: int = 0, pop: int = DEFAULT_POP, gens: int = DEFAULT_GENS,
        max_seconds: float | None = None, test_frac: float = DEFAULT_TEST_FRAC,
        progress: bool = False, curves_path: str = "curves", meta_path: str | None = None,
        blend: str = DEFAULT_BLEND, started: float | None = None) -> dict:
    """Evolve, choose, calibrate and export a predictor; score it on the held-out part.

    `curves` is evo.predict.read_curves' result, `finals` and `meta` read_table's. Returns
    {"doc": the export document, "report": the numbers (JSON-able)}."""
    from evo.females import Females
    from evo.ledger import records_from_rows
    from primitives.export import export_predictor, load_predictor

    t0 = time.perf_counter() if started is None else started  # --max-seconds counts from here
    if pop < 2 or gens < 0:
        raise ValueError(f"need --pop >= 2 and --gens >= 0, got {pop} and {gens}")
    if blend not in BLENDS:
        raise ValueError(f"--blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    if not 0 < test_frac < 1:
        raise ValueError(f"--test-frac must be in (0, 1), got {test_frac}")
    ids = [cid for cid in curves if cid in finals]
    test = split_test(ids, test_frac)
    if (~test).sum() < MIN_TRAIN:
        raise InputError(f"{curves_path}: {len(ids)} curve(s) have a final; evo.fit needs at least "
                         f"{MIN_TRAIN + MIN_TEST} ({MIN_TEST} held out for the test, {MIN_TRAIN} "
                         f"to fit on)")
    feats = features_of(curves, ids, early_steps, full_steps, curves_path, meta, meta_path)
    y = np.array([finals[cid][0] for cid in ids])
    fit_y = y[~test][np.isfinite(y[~test])]
    if len(set(fit_y.tolist())) < 2:
        raise InputError(f"the finals of the {len(fit_y)} curves to fit on are all equal "
                         f"({fit_y[0] if len(fit_y) else 'none finite'}): there is no ranking to learn")
    train_ids = [c for c, t in zip(ids, test) if not t]
    test_ids = [c for c, t in zip(ids, test) if t]
    rows = [{"key": cid, "target": float(t), "features": f} for cid, t, f in zip(ids, y, feats)]
    train = records_from_rows([r for r, t in zip(rows, test) if not t])

    base_test = baseline_predictions(curves, test_ids, early_steps, full_steps, curves_path)
    base_train = baseline_predictions(curves, train_ids, early_steps, full_steps, curves_path)
    seed_everything(seed, torch=False)
    fem = Females(arch_features=meta is not None)
    fem.init(pop)
    bar = Progress(gens, enabled=progress)
    ran, stopped = 0, False
    fem.score(fem.pop, train)
    try:
        for g in range(1, gens + 1):
            fem.evolve(train, 1, pop)
            ran = g
            best = fem.ranked(fem.pop)[0]
            bar.update(g, best.fitness.values[0], str(fem.champion()), time.perf_counter() - t0)
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds and g < gens:
                stopped = True
                break
    finally:
        bar.close()
    choice = (ensemble.choose(fem, train, blend) if blend != "none"
              else {"tree": fem.champion(), "is_blend": False, "blend": None,
                    "scores": {"champion": ensemble.scores_on(fem, fem.champion(), train,
                                                              fem.split(train))}})
    champ = choice["tree"]
    fit_tau, hold_tau = choice["scores"]["blend" if choice["is_blend"] else "champion"]
    X_train = np.array([[f[n] for n in fem.features] for f in feats])[~test]
    raw_train = fem.raw(champ, train, X_train)
    a, b = positive_calibration(raw_train, y[~test])
    interval = ensemble.residual_interval(a * raw_train + b, y[~test])
    meta_doc = {
        "tool": "evo.fit", "seed": seed, "pop": pop, "gens": gens, "gens_run": ran,
        "n_train": len(train_ids), "n_test": len(test_ids), "test_frac": test_frac,
        "fit_kendall_tau": float(fit_tau),
        "holdout_kendall_tau": float(hold_tau) if math.isfinite(hold_tau) else None,
        "holdout_n": int(fem.split(train).sum()),
        "is_reference": str(champ) == "v_last", "blend": blend,
        "target": "the final loss of --finals (e.g. the best validation loss over the full budget)"}
    doc = export_predictor(champ, fem.pset, meta=meta_doc, calibration=(a, b),
                           early_steps=early_steps, full_steps=full_steps, check_rows=X_train)
    doc["interval"] = interval
    if choice["is_blend"]:
        doc["ensemble"] = {"kind": choice["blend"]["kind"], "members": [
            {**m, "sympy": member_sympy(m["tree"], fem.pset)} for m in choice["blend"]["members"]]}
    predictor = load_predictor(doc)  # what evo.predict will load
    cols = {n: np.array([f[n] for f in feats]) for n in predictor.features}
    pred = predictor(cols) if cols else predictor({})
    pred = np.broadcast_to(np.asarray(pred, dtype=float), (len(ids),))
    yt, yf = y[test], y[~test]
    scores = {"formula": {"test_kendall_tau": kendall_tau(pred[test], yt),
                          "test_spearman": spearman(pred[test], yt),
                          "test_mae": float(np.abs(pred[test] - yt).mean()),
                          "train_kendall_tau": kendall_tau(pred[~test], yf)}}
    for name in BASELINE_NAMES:
        scores[name] = {"test_kendall_tau": kendall_tau(base_test[name], yt),
                        "test_spearman": spearman(base_test[name], yt),
                        "test_mae": (float(np.abs(base_test[name] - yt).mean())
                                     if name != "sotl" else None),
                        "train_kendall_tau": kendall_tau(base_train[name], yf)}
    test_recs = records_from_rows([r for r, t in zip(rows, test) if t])
    front = front_docs(fem, train, test_recs, y[~test], X_train, str(champ), early_steps, full_steps)
    interval = dict(interval, test_coverage=ensemble.coverage(pred[test], yt, interval))
    doc["interval"] = {k: v for k, v in interval.items() if k != "test_coverage"}
    scores["formula"]["test_kendall_tau_ci95"] = ensemble.tau_ci(pred[test], yt, seed)
    report = {
        "n_curves": len(curves), "n_with_final": len(ids), "n_train": len(train_ids),
        "n_test": len(test_ids), "test_ids": test_ids, "early_steps": early_steps,
        "full_steps": full_steps, "seed": seed, "pop": pop, "gens": gens, "gens_run": ran,
        "stopped_by_max_seconds": stopped, "arch_features": meta is not None,
        "formula": doc["sympy"], "tree": doc["tree"], "is_reference": str(champ) == "v_last",
        "sympy_checked": doc["sympy_checked"],
        "calibration": doc["calibration"], "scores": scores, "interval": interval,
        "is_blend": choice["is_blend"], "ensemble": doc.get("ensemble"),
        "holdout_n": meta_doc["holdout_n"],
        "front": [{k: d["meta"][k] for k in ("size", "train_kendall_tau", "fit_kendall_tau",
                                             "holdout_kendall_tau", "test_kendall_tau", "default")}
                  | {"sympy": d["sympy"]} for d in front],
        "seconds": time.perf_counter() - t0}
    return {"doc": doc, "report": report, "front": front}


def front_docs(fem, train: list, test_recs: list, y_train: np.ndarray, X_train: np.ndarray,
               chosen: str, early_steps: int, full_steps: int) -> list[dict]:
    """Every member of the accuracy-against-size front (primitives.ensemble.front on the training
    part) as an export document, calibrated on the training part, its scores in its meta (the
    test tau is reported only: nothing is chosen with it); "default" marks the exported formula."""
    from primitives.export import export_predictor

    y_test = np.array([r.target for r in test_recs])
    out = []
    for e in ensemble.front(fem, train):
        raw = fem.raw(e["ind"], train, X_train)
        meta = {"size": e["size"], "train_kendall_tau": e["tau"], "fit_kendall_tau": e["fit_tau"],
                "holdout_kendall_tau": e["holdout_tau"],
                "test_kendall_tau": kendall_tau(fem.raw(e["ind"], test_recs), y_test),
                "default": e["tree"] == chosen}
        out.append(export_predictor(e["ind"], fem.pset, meta=meta,
                                    calibration=positive_calibration(raw, y_train),
                                    early_steps=early_steps, full_steps=full_steps,
                                    check_rows=X_train))
    return out


def format_report(r: dict, out: str | None) -> str:
    """The summary printed at the end of a fit."""
    s = r["scores"]
    lines = [f"{r['n_with_final']} curves with a final: {r['n_train']} to fit on, {r['n_test']} held "
             f"out (by a hash of curve_id); early {r['early_steps']} of {r['full_steps']} steps",
             f"{r['gens_run']} generation(s) of {r['pop']} formulas"
             + (" (stopped by --max-seconds)" if r["stopped_by_max_seconds"] else "")
             + f", {r['seconds']:.1f} s",
             "", f"{'predictor':<20} {'held-out tau':>12} {'Spearman':>9} {'MAE':>9} {'train tau':>10}"]
    for name in ("formula",) + BASELINE_NAMES:
        v = s[name]
        mae = "n/a" if v["test_mae"] is None else f"{v['test_mae']:.4f}"
        label = "formula (exported)" if name == "formula" else name
        lines.append(f"{label:<20} {v['test_kendall_tau']:>12.4f} {v['test_spearman']:>9.4f} "
                     f"{mae:>9} {v['train_kendall_tau']:>10.4f}")
    gain = s["formula"]["test_kendall_tau"] - s["last-loss"]["test_kendall_tau"]
    lo, hi = s["formula"]["test_kendall_tau_ci95"]
    iv = r["interval"]
    lines += ["", f"formula - last-loss on the held-out part: {gain:+.4f}; formula tau over "
              f"{r['n_test']} held-out curves, 95% bootstrap CI [{lo:.3f}, {hi:.3f}]",
              f"{iv['level']:.0%} interval: prediction {iv['lo']:+.4g} .. {iv['hi']:+.4g} (training "
              f"residuals); it holds {iv['test_coverage']:.0%} of the held-out finals"]
    if r["is_blend"]:
        lines.append(f"a blend of {len(r['ensemble']['members'])} formulas beat the champion on both "
                     "parts of the training split: it is exported (its parts in predictor.json)")
    lines.append(f"front (tau on the training part against size, {len(r['front'])} formulas, "
                 "front.json): " + ", ".join(f"{f['size']}:{f['train_kendall_tau']:.3f}"
                                             + ("*" if f["default"] else "") for f in r["front"]))
    if r["is_reference"]:
        lines.append("the reference rule v_last is kept: no evolved formula beat it on the "
                     "training part's own hold-out")
    lines.append(f"formula: {r['formula']}")
    if not r["sympy_checked"]:
        lines.append("note: this sympy text did not reproduce the tree on the checked rows; "
                     "evo.predict evaluates the tree (predictor.json's 'tree'), which is exact")
    if out:
        lines.append(f"written to {out}/predictor.json (use: python -m evo.predict --formula "
                     f"{out}/predictor.json), predictor.txt, .tex, front.json, report.json")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("--curves", required=True, help="CSV: curve_id,step,split,loss")
    ap.add_argument("--finals", required=True, help="CSV: curve_id,final_loss (the targets)")
    ap.add_argument("--early-steps", type=int, required=True, help="use points with step <= E")
    ap.add_argument("--full-steps", type=int, required=True, help="the full training budget F")
    ap.add_argument("--meta", help="CSV: curve_id,n_params,lr (adds the features log_params, log_lr)")
    ap.add_argument("--out", required=True, help="folder for predictor.json/.txt/.tex, report.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pop", type=int, default=DEFAULT_POP, help=f"formulas (default {DEFAULT_POP})")
    ap.add_argument("--gens", type=int, default=DEFAULT_GENS,
                    help=f"GP generations (default {DEFAULT_GENS})")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="start no generation after this long since the command began (reading included; "
                         "at least one runs; the result then depends on the speed)")
    ap.add_argument("--test-frac", type=float, default=DEFAULT_TEST_FRAC,
                    help=f"share of the curves held out for the test (default {DEFAULT_TEST_FRAC})")
    ap.add_argument("--blend", choices=BLENDS, default=DEFAULT_BLEND,
                    help=f"try a blend of the top formulas, kept if it beats the champion (default {DEFAULT_BLEND})")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    return ap


def main(argv=None) -> int:
    """Run the CLI; returns the exit code (2 for bad input)."""
    started = time.perf_counter()
    args = parse_args_or_exit_code(build_parser(), argv)
    if isinstance(args, int):  # --help, or a bad flag (argparse printed why)
        return args
    try:
        check_budget_flags(args.early_steps, args.full_steps)
        if args.max_seconds is not None and not args.max_seconds > 0:
            raise InputError(f"--max-seconds must be > 0, got {args.max_seconds}")
        curves = read_curves(args.curves, args.early_steps)
        finals = read_table(args.finals, ("final_loss",), positive=False)
        meta = read_table(args.meta, ("n_params", "lr"), positive=True) if args.meta else None
        res = fit(curves, finals, args.early_steps, args.full_steps, meta=meta, seed=args.seed,
                  pop=args.pop, gens=args.gens, max_seconds=args.max_seconds,
                  test_frac=args.test_frac, progress=not args.no_progress,
                  curves_path=args.curves, meta_path=args.meta, blend=args.blend,
                  started=started)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        doc = res["doc"]
        (out / "predictor.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        (out / "predictor.txt").write_text(doc["sympy"] + "\n", encoding="utf-8")
        (out / "predictor.tex").write_text(doc["latex"] + "\n", encoding="utf-8")
        (out / "front.json").write_text(json.dumps(res["front"], indent=1) + "\n", encoding="utf-8")
        (out / "report.json").write_text(json.dumps(res["report"], indent=1) + "\n",
                                         encoding="utf-8")
    except (InputError, ValueError, OSError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; nothing written (--max-seconds stops a fit early and keeps its "
              f"best predictor)", file=sys.stderr)
        return 130
    print(format_report(res["report"], args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
