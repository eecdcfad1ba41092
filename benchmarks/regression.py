"""Decision fingerprints of every method on a table: does a change of the loop change any decision?

    python benchmarks/regression.py --seeds 50 --out benchmarks/results/regression_before.json
    python benchmarks/regression.py --seeds 50 --compare benchmarks/results/regression_before.json
    python benchmarks/regression.py --seeds 10 --override '{"start": "full"}' --compare benchmarks/results/regression_v2.json

Each method-variant-seed runs against the table to a fixed budget; its fingerprint is the sha256 of
the search's whole final state (records, males, females, lineage, credit, compute, history, logbook,
as the checkpoint stores it). Two versions of the code that make the same decisions give the same
fingerprints; the table printed says per method-variant how many of the seeds match.
"""
import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evo.table import load_table  # noqa: E402
from evo.tablestats import pool_map, run_method  # noqa: E402

VARIANTS = {  # name: (method, Config overrides): the seven methods, and the loop's other drivers
    "baseline": ("baseline", {}), "male": ("male", {}), "female": ("female", {}), "combined": ("combined", {}),
    "random": ("random", {}), "asha": ("asha", {}), "evolution": ("evolution", {}),
    "combined-steady2": ("combined", {"steady": 2}), "combined-rungs2": ("combined", {"rungs": 2}),
    "combined-choice": ("combined", {"pairing": "choice"}), "male-steady4": ("male", {"steady": 4}),
}


def _job(args):
    table, name, seed, budget, override = args
    method, opts = VARIANTS[name]
    r = run_method(table, method, seed, budget, {**override, **opts}, state=True)
    text = json.dumps(r["state"], sort_keys=True, default=repr)
    return {"variant": name, "seed": seed, "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "best": r["history"][-1]["best"] if r["history"] else None, "champion": r.get("champion"),
            "flops": r["compute"]["flops"], "wall_s": r["wall_s"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default="benchmarks/tables/tiny")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--budget", type=float, default=40.0, help="in mean full trainings of the table")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the fingerprints here (JSON)")
    ap.add_argument("--compare", default=None, help="fingerprints of another version to compare with")
    ap.add_argument("--override", default="{}", help="JSON: Config settings for every variant, e.g. "
                    "'{\"start\": \"full\"}' to compare with fingerprints taken under an older default")
    a = ap.parse_args(argv)
    names = a.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    budget = a.budget * load_table(a.table).mean_full_cost()
    jobs = [(a.table, n, s, budget, json.loads(a.override)) for n in names for s in range(a.seeds)]
    t0 = time.perf_counter()
    rows = pool_map(_job, jobs, a.workers)
    wall = time.perf_counter() - t0
    old = {}
    if a.compare:
        old = {(r["variant"], r["seed"]): r for r in json.loads(Path(a.compare).read_text())["rows"]}
    print(f"| variant | seeds | {'identical to ' + a.compare if a.compare else 'fingerprint of seed 0'} | median best |")
    print("|---|---|---|---|")
    for n in names:
        mine = [r for r in rows if r["variant"] == n]
        best = sorted(r["best"] for r in mine if r["best"] is not None)
        med = f"{best[len(best) // 2]:.4f}" if best else "-"
        if a.compare:
            same = sum(old.get((n, r["seed"]), {}).get("sha256") == r["sha256"] for r in mine)
            cell = f"{same}/{len(mine)}"
        else:
            cell = mine[0]["sha256"][:12]
        print(f"| {n} | {len(mine)} | {cell} | {med} |")
    print(f"\n{len(rows)} searches in {wall:.0f} s on {a.workers} workers")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"table": a.table, "budget": a.budget, "rows": rows}, indent=1))
    if a.compare and any(old.get((r["variant"], r["seed"]), {}).get("sha256") != r["sha256"] for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
