"""Does a preset sit where early speed and final quality disagree? Kendall tau over random archs.

Trains n random architectures of a preset for the full budget (one thread each) and ranks them by
the early val loss (the last eval at early_steps), the sum of early training losses and the
parameter count, against the best and the final val loss over the full budget.

    python benchmarks/preset_tau.py --preset tiny --n 20 --seed 0 [--jobs 2] [--set train_tokens=20000]
"""
import argparse
import dataclasses
import json
import pathlib
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

from models.data import load_dataset, make_token_data
from models.gpt import GPT
from models.presets import get_preset
from models.train import train


def kendall_tau(a, b) -> float:
    """Kendall tau-b of two equal-length sequences."""
    n, conc, disc, ta, tb = len(a), 0, 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ta += 1
            elif db == 0:
                tb += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = ((conc + disc + ta) * (conc + disc + tb)) ** 0.5
    return (conc - disc) / denom if denom else 0.0


def _run(args):
    preset, genes, seed, data_path = args
    ds = load_dataset(data_path)
    data = make_token_data(ds, preset.block_size, preset.train_tokens, preset.n_val_windows,
                           preset.n_train_eval_windows)
    gpt_cfg, train_cfg = preset.configs(genes, ds.vocab_size)
    r = train(gpt_cfg, train_cfg, data, preset.full_steps, seed)
    E = preset.early_steps
    early_val = max((s, v) for s, v in zip(r.eval_steps, r.val_losses) if s <= E)[1]
    return dict(genes=genes, seed=seed, n_params=GPT(gpt_cfg).num_params(), diverged=r.diverged,
                early_val=early_val, early_train_sum=sum(r.train_losses[:E]),
                best_val=r.best_val_loss, best_val_step=r.best_val_step,
                final_val=r.final_val_loss, wall_time=r.wall_time)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--data", default=None)
    ap.add_argument("--set", action="append", default=[], help="override a preset field: name=value")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    preset = get_preset(a.preset)
    for kv in a.set:
        k, v = kv.split("=", 1)
        preset = dataclasses.replace(preset, **{k: type(getattr(preset, k) or 0)(float(v))})
    rng = random.Random(a.seed)
    jobs = [(preset, preset.sample(rng), a.seed * 1000 + i, a.data) for i in range(a.n)]
    t0 = time.perf_counter()
    print(f"{'arch':>4} {'params':>7} {'early_val':>9} {'best_val':>8} {'@step':>5} {'final_val':>9} {'s':>6}")
    rows = []
    with ProcessPoolExecutor(a.jobs) as ex:
        for i, r in enumerate(ex.map(_run, jobs)):
            rows.append(r)
            print(f"{i:>4} {r['n_params']:>7} {r['early_val']:>9.4f} {r['best_val']:>8.4f} "
                  f"{r['best_val_step']:>5} {r['final_val']:>9.4f} {r['wall_time']:>6.2f}", flush=True)
    ok = [r for r in rows if not r["diverged"]]
    col = {k: [r[k] for r in ok] for k in ("early_val", "early_train_sum", "n_params", "best_val", "final_val")}
    n_params_neg = [-x for x in col["n_params"]]  # bigger model, lower loss expected
    taus = {
        "early_val_vs_best": kendall_tau(col["early_val"], col["best_val"]),
        "early_val_vs_final": kendall_tau(col["early_val"], col["final_val"]),
        "train_sum_vs_best": kendall_tau(col["early_train_sum"], col["best_val"]),
        "params_vs_best": kendall_tau(n_params_neg, col["best_val"]),
    }
    secs = [r["wall_time"] for r in rows]
    summary = dict(preset=dataclasses.asdict(preset) | {"space": [str(p) for p in preset.space]},
                   n=a.n, seed=a.seed, jobs=a.jobs, diverged=len(rows) - len(ok), taus=taus,
                   mean_s_per_full=statistics.mean(secs), max_s_per_full=max(secs),
                   total_s=time.perf_counter() - t0, overrides=a.set, rows=rows)
    for k, v in taus.items():
        print(f"tau {k}: {v:.3f}")
    print(f"diverged {summary['diverged']}/{a.n}; mean {summary['mean_s_per_full']:.2f} s per full "
          f"training (max {summary['max_s_per_full']:.2f}); total {summary['total_s']:.1f} s, {a.jobs} jobs")
    out = pathlib.Path(a.out or f"benchmarks/results/preset_tau_{a.preset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
