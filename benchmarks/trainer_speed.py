"""Trainer speed on CPU: ms per iteration and training tokens/s for two configurations.

    python benchmarks/trainer_speed.py [--steps 200] [--full [--full-threads 2]]
    (--full: also one 2000-iteration nanoGPT CPU run on the full data, for its val loss)

    python benchmarks/trainer_speed.py --genomes [--repeats 3] [--full-repeats 1] [--seeds 0 1]
        [--only d0.25 ...] [--compare OLD.json] [--out benchmarks/results/trainer_speed_genomes.json]
    (--genomes: the tiny preset's real trainings, one thread, in one warm process, for four
    genomes: the early budget (60 steps, 7 validations) and the full budget (600 steps, 26),
    best wall / training-step / evaluation seconds of the repeats, final val losses and a
    digest of every curve; --compare prints old vs new from an earlier --genomes JSON)

"tiny": the tiny preset's baseline, one thread (as the search runs it).
"nanogpt_cpu": nanoGPT's README CPU recipe (4 layers, 4 heads, 128 wide, block 64, batch 12,
dropout 0, lr 1e-3 -> 1e-4 over 2000 iterations, warmup 100), on one and on two threads.
"""
import argparse
import hashlib
import json
import os
import pathlib
import platform

import torch

from models.data import load_dataset, make_token_data
from models.gpt import GPTConfig
from models.presets import get_preset
from models.train import TrainConfig, train


def run(name, gpt_cfg, train_cfg, ds, steps, train_tokens, n_val):
    """Train once and return a row of speed (and loss) numbers."""
    data = make_token_data(ds, gpt_cfg.block_size, train_tokens, n_val, 16)
    r = train(gpt_cfg, train_cfg, data, steps, seed=0)
    tokens_per_step = train_cfg.batch_size * gpt_cfg.block_size
    return dict(name=name, steps=steps, threads=train_cfg.threads, n_params=r.n_params,
                ms_per_iter=1000 * tokens_per_step / r.tokens_per_s, steps_per_s=r.tokens_per_s / tokens_per_step,
                tokens_per_s=r.tokens_per_s, wall_s=r.wall_time, best_val_loss=r.best_val_loss,
                final_val_loss=r.final_val_loss, val_windows=n_val)


# (name, genes): the tiny preset's space; dropout 0, 0.1, 0.25 and 0.3; 1-3 layers
GENOMES = (
    ("3x4x16 mlp3 b16 d0.1", dict(n_layer=3, n_head=4, head_size=16, mlp_ratio=3, dropout=0.1, lr=1e-3,
                                   batch_size=16, weight_decay=0.1, warmup=0.0)),
    ("2x2x16 mlp4 b16 d0", dict(n_layer=2, n_head=2, head_size=16, mlp_ratio=4, dropout=0.0, lr=1e-3,
                                 batch_size=16, weight_decay=0.1, warmup=0.0)),
    ("1x3x12 mlp2 b8 d0.25", dict(n_layer=1, n_head=3, head_size=12, mlp_ratio=2, dropout=0.25, lr=3e-3,
                                   batch_size=8, weight_decay=0.05, warmup=0.05)),
    ("2x4x8 mlp4 b12 d0.3", dict(n_layer=2, n_head=4, head_size=8, mlp_ratio=4, dropout=0.3, lr=2e-3,
                                  batch_size=12, weight_decay=0.2, warmup=0.025)),
)


def _digest(r) -> str:
    """A short hash of every curve of a result: equal digests mean bit-identical curves."""
    text = json.dumps([r.train_losses, r.eval_steps, r.val_losses, r.train_eval_losses])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _best(gpt_cfg, train_cfg, data, steps, seed, repeats):
    """Best-of-repeats wall, training-step and evaluation seconds of one training, and its result."""
    best, r = None, None
    for _ in range(repeats):
        r = train(gpt_cfg, train_cfg, data, steps, seed)
        t = (r.wall_time, r.state.train_time, r.wall_time - r.state.train_time)
        best = t if best is None else tuple(min(a, b) for a, b in zip(best, t))
    return best, r


def genomes(a, ds):
    """The --genomes table: tiny-preset trainings (early and full budget) per genome."""
    tiny = get_preset("tiny")
    data = make_token_data(ds, tiny.block_size, tiny.train_tokens, tiny.n_val_windows,
                           tiny.n_train_eval_windows)
    g0, t0 = tiny.configs(GENOMES[0][1], ds.vocab_size)
    train(g0, t0, data, 20, seed=0)  # warm the process (allocator, kernels, first-call costs)
    rows = []
    for name, genes in GENOMES:
        if a.only and not any(o in name for o in a.only):
            continue
        g, t = tiny.configs(genes, ds.vocab_size)
        row = dict(name=name, genes=genes, seeds={})
        (row["early_wall"], row["early_train"], row["early_eval"]), r = _best(
            g, t, data, tiny.early_steps, a.seeds[0], a.repeats)
        row["early_digest"] = _digest(r)
        for i, seed in enumerate(a.seeds):
            best, r = _best(g, t, data, tiny.full_steps, seed, a.full_repeats if i == 0 else 1)
            if i == 0:
                row["full_wall"], row["full_train"], row["full_eval"] = best
            row["seeds"][str(seed)] = dict(final_val_loss=r.final_val_loss, digest=_digest(r))
        rows.append(row)
        print(f"{name:22s} early {row['early_wall']:.3f}s (train {row['early_train']:.3f} eval "
              f"{row['early_eval']:.3f})  full {row['full_wall']:.2f}s (train {row['full_train']:.2f} "
              f"eval {row['full_eval']:.2f})  " + " ".join(
                  f"seed {s}: val {v['final_val_loss']:.4f} {v['digest']}" for s, v in row["seeds"].items()),
              flush=True)
    return rows


def compare(old_rows, rows):
    """Print old vs new seconds, final val losses and whether the curves are bit-identical."""
    old = {r["name"]: r for r in old_rows}
    print(f"\n{'genome':22s} {'budget':6s} {'old s':>7} {'new s':>7} {'speedup':>7}   "
          f"{'old train':>9} {'new train':>9} {'old eval':>8} {'new eval':>8}")
    for r in rows:
        o = old.get(r["name"])
        if o is None:
            continue
        for b in ("early", "full"):
            print(f"{r['name']:22s} {b:6s} {o[b + '_wall']:7.3f} {r[b + '_wall']:7.3f} "
                  f"{o[b + '_wall'] / r[b + '_wall']:6.2f}x   {o[b + '_train']:9.3f} {r[b + '_train']:9.3f} "
                  f"{o[b + '_eval']:8.3f} {r[b + '_eval']:8.3f}")
    print(f"\n{'genome':22s} {'seed':>4} {'old val':>9} {'new val':>9} {'diff':>9}  curves")
    for r in rows:
        o = old.get(r["name"])
        if o is None:
            continue
        same_early = o["early_digest"] == r["early_digest"]
        for s, v in r["seeds"].items():
            if s in o["seeds"]:
                ov = o["seeds"][s]
                same = "identical" if ov["digest"] == v["digest"] else "differ"
                print(f"{r['name']:22s} {s:>4} {ov['final_val_loss']:9.5f} {v['final_val_loss']:9.5f} "
                      f"{v['final_val_loss'] - ov['final_val_loss']:+9.5f}  full {same}, "
                      f"early {'identical' if same_early else 'differ'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--full", action="store_true", help="also the 2000-step nanoGPT CPU run (~2 min)")
    ap.add_argument("--full-threads", type=int, default=2)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default=None, help="JSON results (default benchmarks/results/trainer_speed"
                                                "[_genomes].json)")
    ap.add_argument("--genomes", action="store_true", help="the tiny preset's real trainings per genome")
    ap.add_argument("--repeats", type=int, default=3, help="--genomes: early trainings per genome (best)")
    ap.add_argument("--full-repeats", type=int, default=1, help="--genomes: full trainings of the first seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="--genomes: seeds of the full trainings")
    ap.add_argument("--only", nargs="+", default=None, help="--genomes: genomes whose name contains one of these")
    ap.add_argument("--compare", default=None, help="--genomes: an earlier --genomes JSON to print against")
    a = ap.parse_args()
    ds = load_dataset(a.data)
    if a.genomes:
        torch.set_num_threads(1)
        rows = genomes(a, ds)
        load = os.getloadavg()
        print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores")
        if a.compare:
            compare(json.loads(pathlib.Path(a.compare).read_text())["rows"], rows)
        out = pathlib.Path(a.out or "benchmarks/results/trainer_speed_genomes.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(torch=torch.__version__, cpu=platform.processor(), load_avg=load,
                                       cores=os.cpu_count(), rows=rows), indent=1))
        return
    tiny = get_preset("tiny")
    g, t = tiny.configs(tiny.baseline, ds.vocab_size)
    t = TrainConfig(**{**t.__dict__, "max_steps": a.steps, "eval_interval": a.steps})
    rows = [run("tiny", g, t, ds, a.steps, tiny.train_tokens, 16)]
    nano_g = GPTConfig(block_size=64, vocab_size=ds.vocab_size, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
    runs = [(a.steps, 16, 1), (a.steps, 16, 2)] + ([(2000, 200 * 12, a.full_threads)] if a.full else [])
    for steps, n_val, threads in runs:
        nano_t = TrainConfig(lr=1e-3, min_lr=1e-4, batch_size=12, warmup_steps=100, max_steps=2000,
                             eval_interval=steps, beta2=0.99, threads=threads)
        rows.append(run("nanogpt_cpu", nano_g, nano_t, ds, steps, None, n_val))
    print(f"{'config':12s} {'steps':>5} {'thr':>3} {'params':>8} {'ms/iter':>8} {'steps/s':>8} "
          f"{'tokens/s':>9} {'val':>7}")
    for r in rows:
        print(f"{r['name']:12s} {r['steps']:>5} {r['threads']:>3} {r['n_params']:>8} {r['ms_per_iter']:>8.2f} "
              f"{r['steps_per_s']:>8.1f} {r['tokens_per_s']:>9.0f} {r['final_val_loss']:>7.4f}")
    out = pathlib.Path(a.out or "benchmarks/results/trainer_speed.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()  # other processes on the machine slow multi-threaded runs most
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores")
    out.write_text(json.dumps(dict(torch=torch.__version__, cpu=platform.processor(), load_avg=load,
                                   cores=os.cpu_count(), rows=rows), indent=1))


if __name__ == "__main__":
    main()
