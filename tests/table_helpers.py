"""A small synthetic table in the public format: fast to make, with a known best architecture."""
import csv
import json
import math
from pathlib import Path

import numpy as np


def make_table(d: Path, n: int = 60, full: int = 100, early: int = 10, seed: int = 0, eval_every: int = 5) -> Path:
    """n architectures over genes (width: 4 choices, lr: log range); curves decay then overfit."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    widths = rng.choice([16, 32, 48, 64], size=n)
    lrs = np.exp(rng.uniform(math.log(1e-4), math.log(1e-2), size=n))
    with open(d / "archs.csv", "w", newline="") as fa, open(d / "curves.csv", "w", newline="") as fc:
        wa, wc = csv.writer(fa), csv.writer(fc)
        wa.writerow(["arch_id", "width", "lr", "n_params", "cost_per_step"])
        wc.writerow(["curve_id", "step", "split", "loss"])
        for i in range(n):
            w, lr = int(widths[i]), float(lrs[i])
            speed = 0.02 + 3.0 * lr  # fast learners...
            floor = 1.2 + 0.4 * abs(math.log10(lr) + 2.7) - 0.002 * w  # ...are not always the best ones
            overfit = 0.002 * w * lr * 100
            wa.writerow([f"x{i}", w, f"{lr:.6g}", w * w * 10, w * w * 60])
            for s in range(1, full + 1):
                loss = floor + 2.0 * math.exp(-speed * s) + rng.normal(0, 0.02)
                wc.writerow([f"x{i}", s, "train", f"{loss:.5f}"])
            for s in range(0, full + 1, eval_every):
                val = floor + 0.05 + 2.0 * math.exp(-speed * s) + overfit * (s / full) ** 2
                wc.writerow([f"x{i}", s, "val", f"{val:.5f}"])
    (d / "table.json").write_text(json.dumps({"full_steps": full, "early_steps": early, "genes": ["width", "lr"],
                                              "cost_unit": "flops", "name": "synthetic"}))
    return d
