"""The same MLP on scikit-learn's digits as an ordinary Optuna script: Dimorph comes in by the two
lines that choose the sampler and the pruner.

    python examples/digits_optuna.py --trials 40       # about a minute on one CPU core
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make evo/ and examples/ importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402

from evo.optuna_search import DimorphPruner, DimorphSampler  # noqa: E402
from examples.digits import EVERY, FULL_STEPS, build, data  # noqa: E402


def make_objective(full_steps: int = FULL_STEPS):
    def objective(trial):
        import torch

        torch.set_num_threads(1)
        config = {"hidden": trial.suggest_int("hidden", 8, 128),
                  "layers": trial.suggest_categorical("layers", [1, 2]),
                  "lr": trial.suggest_float("lr", 1e-4, 0.3, log=True),
                  "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
                  "batch": trial.suggest_categorical("batch", [16, 32, 64])}
        xt, yt, xv, yv = data()
        s, best = build(config), float("inf")
        for step in range(1, full_steps + 1):
            idx = torch.randint(len(yt), (config["batch"],), generator=s["gen"])
            loss = torch.nn.functional.cross_entropy(s["model"](xt[idx]), yt[idx])
            s["opt"].zero_grad()
            loss.backward()
            s["opt"].step()
            if step % EVERY == 0:
                with torch.no_grad():
                    val = float(torch.nn.functional.cross_entropy(s["model"](xv), yv))
                best = min(best, val)
                trial.report(val, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return best
    return objective


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--full-steps", type=int, default=FULL_STEPS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--storage", default=None, help="e.g. sqlite:///digits.db (optuna-dashboard reads it)")
    a = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="digits-optuna", storage=a.storage, load_if_exists=True,
                                sampler=DimorphSampler(seed=a.seed),   # was: TPESampler(seed=...)
                                pruner=DimorphPruner())                # was: MedianPruner()
    study.optimize(make_objective(a.full_steps), n_trials=a.trials)
    print(f"{len(study.trials)} trials, best validation loss {study.best_value:.4f} with {study.best_params}")
    return study


if __name__ == "__main__":
    main()
