"""Seed noise and signal of the tiny preset's target (best validation loss over the full budget).

Trains A architectures (the baseline and A - 1 random ones) with S seeds each under one or more
evaluation settings and prints, per setting: the mean seed std of one architecture (noise), the
std across architectures of their seed means (signal), their ratio (SNR), the time share of
evaluation inside a training, and the number of validation points inside the early budget.

    python benchmarks/noise.py --archs 5 --seeds 5 --settings old new
"""
import argparse
import dataclasses
import json
import random
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.data import load_dataset, make_token_data  # noqa: E402
from models.presets import get_preset  # noqa: E402
from models.train import train  # noqa: E402

# the tiny preset before the clean-target change, and as it is now
SETTINGS = {
    "old": dict(n_val_windows=32, n_train_eval_windows=32, eval_interval=60, early_evals=0),
    "now": {},
}


def preset_for(name: str, extra: dict):
    p = get_preset("tiny")
    return dataclasses.replace(p, **{**SETTINGS.get(name, {}), **extra})


def one(job):
    setting, extra, genes, seed, data_path = job
    p = preset_for(setting, extra)
    ds = load_dataset(data_path)
    data = make_token_data(ds, p.block_size, p.train_tokens, p.n_val_windows, p.n_train_eval_windows)
    gpt, tc = p.configs(genes, ds.vocab_size)
    r = train(gpt, tc, data, p.full_steps, seed)
    early_vals = sum(1 for s in r.eval_steps if 0 < s <= p.early_steps)
    return {"setting": setting, "genes": genes, "seed": seed, "best_val_loss": r.best_val_loss,
            "final_val_loss": r.final_val_loss, "wall": r.wall_time, "train": r.state.train_time if r.state else None,
            "early_vals": early_vals, "n_evals": len(r.eval_steps)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--settings", nargs="+", default=["old", "now"])
    ap.add_argument("--override", default="{}", help="JSON preset overrides applied to every setting")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default="benchmarks/results/noise_tiny.json")
    a = ap.parse_args(argv)
    extra = json.loads(a.override)
    p = get_preset("tiny")
    rng = random.Random(0)
    archs = [dict(p.baseline)] + [p.sample(rng) for _ in range(a.archs - 1)]
    jobs = [(s, extra, g, seed, a.data) for s in a.settings for g in archs for seed in range(a.seeds)]
    t0 = time.perf_counter()
    with get_context("spawn").Pool(a.workers) as pool:
        rows = pool.map(one, jobs)
    out = {"archs": archs, "seeds": a.seeds, "override": extra, "rows": rows, "summary": {}}
    print(f"{'setting':8s} {'noise (seed std)':>16s} {'signal (arch std)':>17s} {'SNR':>6s} "
          f"{'eval share':>10s} {'early val pts':>13s} {'s/training':>10s}")
    for s in a.settings:
        rs = [r for r in rows if r["setting"] == s]
        m = np.array([[r["best_val_loss"] for r in rs if r["genes"] == g] for g in archs])
        noise = float(np.mean(m.std(axis=1, ddof=1)))
        signal = float(m.mean(axis=1).std(ddof=1))
        share = float(np.mean([1 - r["train"] / r["wall"] for r in rs if r["train"]]))
        summ = {"noise": noise, "signal": signal, "snr": signal / noise, "eval_share": share,
                "early_val_points": rs[0]["early_vals"], "mean_wall_s": float(np.mean([r["wall"] for r in rs])),
                "per_arch_mean": m.mean(axis=1).tolist(), "per_arch_std": m.std(axis=1, ddof=1).tolist()}
        out["summary"][s] = summ
        print(f"{s:8s} {noise:16.4f} {signal:17.4f} {signal / noise:6.1f} {share:10.1%} "
              f"{summ['early_val_points']:13d} {summ['mean_wall_s']:10.1f}")
    print(f"{len(rows)} trainings in {time.perf_counter() - t0:.0f} s")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
