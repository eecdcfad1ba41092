"""Which way of choosing the females' champion generalises on small archives?

On the committed curves of benchmarks/predictors.py (48 tiny architectures trained to the full
budget), at one early fraction, over random fit/hold-out splits: evolve females on the fit part
with several variants of the GP and of the champion rule, and score the champion on the held-out
part against last-loss. Prints a table and writes benchmarks/results/female_variants.json.

    python benchmarks/female_variants.py --splits 20 --frac 0.1
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import predictors as P  # noqa: E402  (the benchmark beside this file)

from evo.females import REFERENCE, Females  # noqa: E402
from evo.ledger import records_from_rows  # noqa: E402
from primitives.features import curve_features  # noqa: E402
from primitives.fitness import kendall_tau, rankdata  # noqa: E402
from primitives.gp import make_pred_toolbox  # noqa: E402

# name: (architecture features, max depth, max size, parsimony per node, champion rule)
VARIANTS = {
    "best fit tau (top-5 by hold-out, no reference)": (False, 8, 60, 0.0, "top5"),
    "  + parsimony 0.01 per node": (False, 8, 60, 0.01, "top5"),
    "  + depth <= 4, size <= 15": (False, 4, 15, 0.0, "top5"),
    "  rank-average of the top 5": (False, 8, 60, 0.0, "ensemble"),
    "  all records fit, best fit tau": (False, 8, 60, 0.0, "nosplit"),
    "reference rule (the engine's)": (False, 8, 60, 0.0, "reference"),
    "reference rule, depth <= 4, size <= 15": (False, 4, 15, 0.0, "reference"),
    "reference rule + architecture features": (True, 8, 60, 0.0, "reference"),
}


class Variant(Females):
    """Females with another bloat limit, a parsimony penalty and champion rule."""

    def __init__(self, arch, depth, size, lam, rule):
        super().__init__(arch)
        self.toolbox = make_pred_toolbox(self.pset, max_depth=depth, max_size=size)
        self.lam, self.rule = lam, rule

    def split(self, archive):
        return np.zeros(len(archive), bool) if self.rule == "nosplit" else super().split(archive)

    def score(self, pop, archive):
        super().score(pop, archive)
        for ind in pop:
            t, s = ind.fitness.values
            ind.fitness.values = (t - self.lam * s, s)

    def truncate(self, pop, mu):
        if self.rule == "reference":
            return super().truncate(pop, mu)
        return Females.truncate(self, [i for i in pop if str(i) != REFERENCE] or pop, mu)

    def predict(self, records):
        if self.rule == "ensemble":
            return np.mean([rankdata(self.raw(t, records)) for t in self.ranked(self.pop)[:5]], axis=0)
        if self.rule == "nosplit":
            return self.raw(self.ranked(self.pop)[0], records)
        if self.rule == "top5":
            best = self.ranked(self.pop)[:5]
            champ = sorted(best, key=lambda i: (-np.nan_to_num(i.holdout_tau, nan=-2.0), -i.fitness.values[0]))[0]
            return self.raw(champ, records)
        return self.raw(self.champion(), records)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", default=str(P.RESULTS / "predictor_curves_tiny.json"))
    ap.add_argument("--frac", type=float, default=0.1)
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--pop", type=int, default=48)
    ap.add_argument("--gens", type=int, default=40)
    args = ap.parse_args(argv)
    doc = json.loads(Path(args.archive).read_text())
    archs, F = P.usable(doc), doc["full_steps"]
    E = max(1, round(args.frac * F))
    recs = []
    for a in archs:
        r = P.early_inputs(a, E, F)
        r["features"] = curve_features(list(range(1, len(a["train_losses"]) + 1)), a["train_losses"],
                                       a["eval_steps"], a["val_losses"], E, F, n_params=a["n_params"],
                                       lr=a["genes"]["lr"])
        recs.append(r)
    rng = np.random.RandomState(0)
    taus = {"last-loss": []} | {v: [] for v in VARIANTS}
    for i in range(args.splits):
        hold = np.zeros(len(recs), bool)
        hold[rng.choice(len(recs), round(len(recs) / 3), replace=False)] = True
        fit = [r for r, h in zip(recs, hold) if not h]
        test = [r for r, h in zip(recs, hold) if h]
        y = np.array([r["target"] for r in test])
        taus["last-loss"].append(kendall_tau([r["builtin"]["last-loss"] for r in test], y))
        for name, v in VARIANTS.items():
            random.seed(1 + i)
            np.random.seed(1 + i)
            fem = Variant(*v)
            fem.init(args.pop)
            fem.evolve(records_from_rows(fit), args.gens, args.pop)
            taus[name].append(kendall_tau(fem.predict(records_from_rows(test)), y))
    last = np.array(taus["last-loss"])
    rows = {k: {"mean": float(np.mean(t)), "std": float(np.std(t, ddof=1)),
                "wins": int((np.array(t) > last).sum()), "losses": int((np.array(t) < last).sum())}
            for k, t in taus.items()}
    print(f"{len(recs)} architectures, early {args.frac:.0%} ({E} steps), {args.splits} random splits "
          f"holding out {round(len(recs) / 3)}\n")
    print("| champion | hold-out tau, mean ± std | splits better / worse than last-loss |\n|---|---|---|")
    for k, r in rows.items():
        print(f"| {k.strip()} | {r['mean']:.3f} ± {r['std']:.3f} | {r['wins']} / {r['losses']} |")
    out = P.RESULTS / "female_variants.json"
    out.write_text(json.dumps({"frac": args.frac, "splits": args.splits, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
