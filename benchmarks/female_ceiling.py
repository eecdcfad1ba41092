"""How much could a perfect female change? The search with oracle decisions, against a table.

    python benchmarks/female_ceiling.py --table benchmarks/tables/tiny --seeds 20 --first-seed 1000

The table knows every architecture's final target, so the two places where the females act can be
given the truth instead of a prediction:
- `oracle-promote`: each generation's children are promoted by their true final target (a female
  that ranks perfectly), at the same cost as the real search;
- `oracle-rank`: the males are ranked (for selection and mating) by their true final target, known
  or not (males bred by a perfect predicted final loss);
- `oracle-both`: both.
If even the oracle does not beat the search that decides by the early loss, no predictor can, and
the gender advantage has to come from elsewhere. Prints the median-regret table (paired Wilcoxon of
--reference against each row) and writes it with --out.
"""
import argparse
import json
import math
import sys
import time
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evo.table import load_table  # noqa: E402
from evo.tablestats import markdown, summarise  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table_ablations import _job as table_job  # noqa: E402  (the benchmark beside this file)

BIG = 1e9


def _patch(oracle: str, table: str) -> None:
    """Give the co-evolution policy the table's truth where `oracle` says (in this worker only)."""
    from evo.coevolution import CoEvolution

    tab = load_table(table)

    def truth(rec) -> float:
        t = float(tab.targets[tab.row_of(rec.genes)])
        return t if math.isfinite(t) else BIG

    if oracle in ("promote", "both"):
        def score(self, recs, judge):
            for rec in recs:
                rec.score = rec.predicted = truth(rec)
        CoEvolution.score = score
    if oracle in ("rank", "both"):
        def rank_males(self, pop, champion):
            recs = [self.ledger.records[i.key] for i in pop]
            for ind, rec in zip(pop, recs):
                v = truth(rec) if math.isfinite(rec.early_val) else BIG
                ind.fitness.values = (v, v)
            return sorted(pop, key=lambda i: (i.fitness.values[0], i.key))
        CoEvolution.rank_males = rank_males


def _job(args):
    """table_ablations' job, with the oracle patches of the variant applied first."""
    opts = dict(args[5])
    oracle = opts.pop("oracle", None)
    if oracle:
        _patch(oracle, args[0])
    return table_job((*args[:5], opts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default="benchmarks/tables/tiny")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--budgets", default="10,20,40,80")
    ap.add_argument("--start", default="bracket", choices=("full", "bracket"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", default=None, help="comma-separated built-in variants to run besides combined and --extra (default: all)")
    ap.add_argument("--extra", default="{}", help='JSON: more variants, name -> Config overrides (and "oracle")')
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    s0 = {"start": a.start}
    variants = {"combined": dict(s0), "male": {**s0, "method": "male"},
                "oracle-promote": {**s0, "oracle": "promote"}, "oracle-rank": {**s0, "oracle": "rank"},
                "oracle-both": {**s0, "oracle": "both"}, "male oracle-rank": {**s0, "method": "male", "oracle": "rank"}}
    extra = {k: {**s0, **v} for k, v in json.loads(a.extra).items()}
    if a.only is not None:  # combined (the reference), the named ones and the extra ones
        variants = {k: v for k, v in variants.items() if k in a.only.split(",") or k == "combined"}
    variants.update(extra)
    budgets = [float(b) for b in a.budgets.split(",")]
    t = load_table(a.table)
    unit, best = t.mean_full_cost(), t.best_target
    jobs = [(a.table, "combined", s, max(budgets) * unit, n, o)
            for s in range(a.first_seed, a.first_seed + a.seeds) for n, o in variants.items()]
    t0 = time.perf_counter()
    with get_context("spawn").Pool(a.workers, maxtasksperchild=1) as pool:  # patches stay in one worker
        records = pool.map(_job, jobs, chunksize=1)
    s = summarise(records, list(variants), budgets, unit, best, reference="combined")
    note = (f"oracle decisions on {a.table}, --start {a.start}, seeds {a.first_seed}..{a.first_seed + a.seeds - 1}; "
            f"p: paired Wilcoxon of combined vs the row; {time.perf_counter() - t0:.0f} s")
    print(markdown(s, note, reference="combined"))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"note": note, "summary": s}, indent=1, default=float))


if __name__ == "__main__":
    main()
