"""A small MLP on scikit-learn's digits (shipped with scikit-learn: offline), searched by Dimorph
through the Python API (evo.objective).

    python examples/digits.py --budget 10              # about a minute on one CPU core
    python -m evo.run --objective examples.digits:objective --budget 10 --storage sqlite:///digits.db

`train` is the objective: it trains a configuration up to `steps` mini-batch steps from the state
its last call returned, and returns the validation losses it measured every EVERY steps (and the
new state). Everything random is seeded from the configuration, so a configuration trains the same
way every time.
"""
from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make evo/ importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evo.objective import Choice, Int, LogFloat, Objective, search  # noqa: E402

EVERY = 10
FULL_STEPS = 200
SPACE = {"hidden": Int(8, 128), "layers": Choice(1, 2), "lr": LogFloat(1e-4, 0.3),
         "weight_decay": LogFloat(1e-6, 1e-2), "batch": Choice(16, 32, 64)}

_DATA = None


def data():
    """(train x, train y, val x, val y) tensors: the digits, a fixed 70/30 split, scaled to [0, 1]."""
    global _DATA
    if _DATA is None:
        import numpy as np
        import torch
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        order = np.random.RandomState(0).permutation(len(y))
        x, y = torch.tensor(x[order] / 16.0, dtype=torch.float32), torch.tensor(y[order])
        cut = int(0.7 * len(y))
        _DATA = (x[:cut], y[:cut], x[cut:], y[cut:])
    return _DATA


def build(config: dict):
    import torch

    seed = zlib.crc32(repr(sorted(config.items())).encode())
    torch.manual_seed(seed)
    layers, width = [], 64
    for _ in range(config["layers"]):
        layers += [torch.nn.Linear(width, config["hidden"]), torch.nn.ReLU()]
        width = config["hidden"]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    gen = torch.Generator().manual_seed(seed)
    return {"model": model, "opt": opt, "gen": gen, "step": 0}


def train(config: dict, steps: int, state):
    """The objective: train up to `steps`, return ([(step, val loss), ...], state)."""
    import torch

    torch.set_num_threads(1)
    xt, yt, xv, yv = data()
    s = state or build(config)
    points = []
    while s["step"] < steps:
        idx = torch.randint(len(yt), (config["batch"],), generator=s["gen"])
        loss = torch.nn.functional.cross_entropy(s["model"](xt[idx]), yt[idx])
        s["opt"].zero_grad()
        loss.backward()
        s["opt"].step()
        s["step"] += 1
        if s["step"] % EVERY == 0:
            with torch.no_grad():
                points.append((s["step"], float(torch.nn.functional.cross_entropy(s["model"](xv), yv))))
    return points, s


objective = Objective(train, SPACE, full_steps=FULL_STEPS, name="digits")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=10.0, help="full trainings")
    ap.add_argument("--full-steps", type=int, default=FULL_STEPS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--storage", default=None)
    a = ap.parse_args(argv)
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    obj = Objective(train, SPACE, full_steps=a.full_steps, name="digits")
    study = search(obj, budget=a.budget, seed=a.seed, storage=a.storage)
    print(f"{len(study.trials)} trials, best validation loss {study.best_value:.4f} with {study.best_params}")
    return study


if __name__ == "__main__":
    main()
