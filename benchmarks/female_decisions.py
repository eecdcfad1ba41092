"""Do the females change decisions? How often the champion's promotion differs from early loss's,
and what the differences gained (table lookup of both choices' true targets).

    python benchmarks/female_decisions.py --table benchmarks/tables/tiny --seeds 30 --first-seed 1000

For every generation of a combined search against a table (budget 80 mean full trainings), the
child the champion female promotes is compared with the child the early validation loss would have
promoted; where they differ, gain = target(early loss's pick) - target(champion's pick) (> 0: the
female picked better). Prints one table row per seed range and writes the per-decision records.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evo.coevolution import CoEvolution  # noqa: E402
from evo.table import load_table  # noqa: E402
from evo.tablestats import run_method  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default="benchmarks/tables/tiny")
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--budget", type=float, default=80.0)
    ap.add_argument("--mode", default="combined")
    ap.add_argument("--opts", default="{}", help="JSON Config overrides")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    tab = load_table(a.table)
    decisions = []
    real = CoEvolution.promote

    def promote(self, children, champion):
        chosen, lucky = real(self, children, champion)
        recs = [self.ledger.records[c.key] for c in children if self.ledger.records[c.key].early_done]
        if self.judge(champion) is not None and recs and chosen:
            by_early = min(recs, key=lambda r: (r.early_val, r.key)).key
            truth = {r.key: float(tab.targets[tab.row_of(r.genes)]) for r in recs}
            ref = self.fem.reference()
            decisions.append({"seed": self.cfg.seed, "judge": str(self.judge(champion)), "female": chosen[0],
                              "early": by_early, "differs": chosen[0] != by_early,
                              "gain": truth[by_early] - truth[chosen[0]],
                              "ref_holdout": float(getattr(ref, "holdout_tau", float("nan"))) if ref else None,
                              "ref_fit": float(ref.fitness.values[0]) if ref else None})
        return chosen, lucky

    CoEvolution.promote = promote
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        run_method(a.table, a.mode, seed, a.budget * tab.mean_full_cost(), json.loads(a.opts))
    d = [x for x in decisions if x["differs"]]
    gains = np.array([x["gain"] for x in d])
    judges = {}
    for x in decisions:
        judges[x["judge"]] = judges.get(x["judge"], 0) + 1
    print(f"{a.mode} on {a.table}, seeds {a.first_seed}..{a.first_seed + a.seeds - 1}, budget {a.budget:g}")
    print(f"judged promotions: {len(decisions)}; the champion's pick differs from early loss's in {len(d)} "
          f"({100 * len(d) / max(1, len(decisions)):.0f}%)")
    if len(d):
        print(f"where they differ: the champion's pick is better in {int((gains > 0).sum())}, worse in "
              f"{int((gains < 0).sum())}, tied in {int((gains == 0).sum())}; mean gain {gains.mean():+.4f}, "
              f"median {np.median(gains):+.4f} (true target, lower is better)")
    held = np.array([x["ref_holdout"] for x in decisions if x["ref_holdout"] is not None], dtype=float)
    if held.size:
        print(f"the reference (v_last) held out: score 1 (cannot be beaten there) in "
              f"{100 * np.mean(held >= 1.0):.0f}% of judged promotions, no held-out part yet in "
              f"{100 * np.mean(np.isnan(held)):.0f}%, median {np.nanmedian(held):.2f}" if np.isfinite(held).any() else "")
    top = sorted(judges.items(), key=lambda kv: -kv[1])[:5]
    print("most frequent judges: " + "; ".join(f"{j} ({n})" for j, n in top))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"decisions": decisions}, indent=1))


if __name__ == "__main__":
    main()
