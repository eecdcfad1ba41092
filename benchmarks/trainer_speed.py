"""Trainer speed on CPU: ms per iteration and training tokens/s for two configurations.

    python benchmarks/trainer_speed.py [--steps 200] [--full [--full-threads 2]]
    (--full: also one 2000-iteration nanoGPT CPU run on the full data, for its val loss)

"tiny": the tiny preset's baseline, one thread (as the search runs it).
"nanogpt_cpu": nanoGPT's README CPU recipe (4 layers, 4 heads, 128 wide, block 64, batch 12,
dropout 0, lr 1e-3 -> 1e-4 over 2000 iterations, warmup 100), on one and on two threads.
"""
import argparse
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--full", action="store_true", help="also the 2000-step nanoGPT CPU run (~2 min)")
    ap.add_argument("--full-threads", type=int, default=2)
    ap.add_argument("--data", default=None)
    ap.add_argument("--out", default="benchmarks/results/trainer_speed.json")
    a = ap.parse_args()
    ds = load_dataset(a.data)
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
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()  # other processes on the machine slow multi-threaded runs most
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores")
    out.write_text(json.dumps(dict(torch=torch.__version__, cpu=platform.processor(), load_avg=load,
                                   cores=os.cpu_count(), rows=rows), indent=1))


if __name__ == "__main__":
    main()
