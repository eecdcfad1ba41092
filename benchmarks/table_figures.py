"""Figures of a table: the spread of targets, the seed noise of one architecture, early vs final.

    python benchmarks/table_figures.py --table benchmarks/tables/tiny --out docs/figures/table_tiny.png
"""
import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evo.bench import describe  # noqa: E402
from evo.table import Table  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default="benchmarks/tables/tiny")
    ap.add_argument("--out", default="docs/figures/table_tiny.png")
    a = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, d = Table(a.table), describe(a.table)
    early = np.array([t.result(i, t.early_steps)["val_losses"][-1] for i in range(len(t.ids))])
    by: dict[str, list[float]] = {}
    with open(Path(a.table) / "seeds.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            by.setdefault(row["arch_id"], []).append(float(row["best_val_loss"]))
    noisy = sorted((v for v in by.values() if len(v) > 1), key=np.mean)

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    ax[0].hist(t.targets, bins=40, color="#4c72b0")
    ax[0].set_xlabel("best val loss over the full budget")
    ax[0].set_ylabel("architectures")
    ax[0].set_title(f"{len(t.ids)} random architectures: std {d['signal_std']:.3f}")
    for k, v in enumerate(noisy):
        ax[1].plot([k] * len(v), v, "o", color="#dd8452", ms=4)
    ax[1].set_xlabel("architecture (sorted by mean)")
    ax[1].set_ylabel("best val loss")
    ax[1].set_title(f"{len(noisy)} architectures x {d['noise_seeds']} seeds: mean seed std "
                    f"{d['seed_noise_std']:.4f} (SNR {d['snr']:.1f})")
    ax[2].scatter(early, t.targets, s=6, alpha=0.6, color="#55a868")
    ax[2].set_xlabel(f"val loss at the early budget (step {t.early_steps})")
    ax[2].set_ylabel("best val loss over the full budget")
    ax[2].set_title(f"early vs final: Kendall tau {d['tau_last_early_val_vs_target']:.2f}")
    for x in ax:
        x.grid(alpha=0.3)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(a.out)


if __name__ == "__main__":
    main()
