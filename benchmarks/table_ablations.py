"""Variants of a search mode against a table, paired over seeds: what does each setting buy?

    python benchmarks/table_ablations.py --table benchmarks/tables/tiny --mode combined --seeds 50 \
        --variants '{"offspring12": {"offspring": 12}, "promote1": {"promote": 1}}'

Every variant runs the same seeds as the default configuration ("default"); the report gives per
budget the median target found, the median regret, and the paired Wilcoxon p of the reference
(--reference, default "default") vs each other variant (evo.tablestats). A variant may name another
method to run instead of --mode, e.g. '{"random": {"method": "random"}}' for the random-search peer.
Use other seeds than the ones a result is reported on when choosing settings.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evo.table import load_table  # noqa: E402
from evo.tablestats import markdown, pool_map, run_method, summarise  # noqa: E402


def _job(args):
    table, mode, seed, budget, name, opts = args
    opts = dict(opts)
    r = run_method(table, opts.pop("method", mode), seed, budget, opts)
    r["method"] = name
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default="benchmarks/tables/tiny")
    ap.add_argument("--mode", default="combined")
    ap.add_argument("--variants", required=True, help="JSON: name -> Config overrides")
    ap.add_argument("--reference", default="default", help="the variant every other one is tested against")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--budgets", default="10,20,40,80")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the summary JSON here")
    a = ap.parse_args(argv)
    variants = {"default": {}, **json.loads(a.variants)}
    budgets = [float(b) for b in a.budgets.split(",")]
    t = load_table(a.table)
    unit, best = t.mean_full_cost(), t.best_target
    seeds = range(a.first_seed, a.first_seed + a.seeds)
    jobs = [(a.table, a.mode, s, max(budgets) * unit, n, o) for s in seeds for n, o in variants.items()]
    t0 = time.perf_counter()
    records = pool_map(_job, jobs, a.workers)
    s = summarise(records, list(variants), budgets, unit, best, reference=a.reference)
    note = (f"{a.mode} on {a.table}, seeds {a.first_seed}..{a.first_seed + a.seeds - 1}, variants {variants}; "
            f"p: paired Wilcoxon of {a.reference} vs the variant; {time.perf_counter() - t0:.0f} s")
    print(markdown(s, note, reference=a.reference))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"note": note, "summary": s}, indent=1, default=float))


if __name__ == "__main__":
    main()
