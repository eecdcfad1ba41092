"""Search your own model: a space declared in Python and an objective that trains a configuration
for a number of steps from a saved state, searched by Dimorph's males (DimorphSampler) and females
(DimorphPruner) through an Optuna study.

    from evo.objective import Choice, Float, Int, LogFloat, Objective, search

    def train(config, steps, state):
        model = state or build(config)          # state: what the last call returned (None first)
        points = []
        while model.step < steps:
            model.train_one_step()
            if model.step % 10 == 0:
                points.append((model.step, model.val_loss()))
        return points, model                    # the new points (step, loss) and the new state

    objective = Objective(train, {"lr": LogFloat(1e-4, 1e-1), "width": Int(16, 256),
                                  "act": Choice("relu", "gelu"), "dropout": Float(0, 0.5)},
                          full_steps=600)
    study = search(objective, budget=20, seed=0)      # or: python -m evo.objective --objective pkg.mod:objective

The contract of `fn(config, steps, state) -> (points, state)`:
- it trains `config` up to step `steps` (a rung, then the full budget), starting from `state` (None
  for a fresh model; otherwise exactly what its previous call for this configuration returned), and
  returns the points (step, loss) it measured after the previous call's steps, lower is better;
- the trial's value is the best loss it reported up to `full_steps`;
- determinism is the objective's: seed its own generators from the config (the search passes the
  same config and steps for the same trial under the same seed); an `fn` with a `seed` parameter
  gets the search's seed from `evo.run` (through Optuna it keeps its default);
- a non-finite loss (NaN, inf) stops the trial at once (pruned, at the cost of the steps it ran); an
  exception marks the trial FAIL, is logged, and the search goes on; a trial with no point fails.

Cost is counted in training steps: a pruned trial costs the steps it reached, a complete one
`full_steps`; `budget` is in full trainings. The study holds everything (each trial's config,
curve, state, cost); with `storage` (an RDB URL, e.g. sqlite:///search.db) a search that is stopped
and started again with the same study name continues where it was: the cost spent is recomputed
from the trials, so the budget holds across restarts.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from evo.study_cost import spent_steps, trials_line  # noqa: F401 (spent_steps: part of the API)


@dataclass(frozen=True)
class Int:
    low: int
    high: int

    def suggest(self, trial, name: str):
        return trial.suggest_int(name, self.low, self.high)


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log = False  # a class constant, not a field: LogFloat's is True

    def suggest(self, trial, name: str):
        return trial.suggest_float(name, self.low, self.high, log=self.log)


class LogFloat(Float):
    """A float range searched on a log scale (low > 0)."""

    log = True


class Choice:
    def __init__(self, *values):
        if not values:
            raise ValueError("Choice needs at least one value")
        self.values = tuple(values)

    def suggest(self, trial, name: str):
        return trial.suggest_categorical(name, list(self.values))

    def __repr__(self) -> str:
        return f"Choice{self.values!r}"


def _check(name: str, p) -> None:
    if isinstance(p, (Int, Float)):
        if not (math.isfinite(p.low) and math.isfinite(p.high) and p.low <= p.high):
            raise ValueError(f"space: {name}={p!r} needs finite low <= high")
        if isinstance(p, Int) and not (float(p.low).is_integer() and float(p.high).is_integer()):
            raise ValueError(f"space: {name}={p!r} needs integer bounds")
        if isinstance(p, LogFloat) and p.low <= 0:
            raise ValueError(f"space: {name}={p!r} needs low > 0 on a log scale")
    elif not isinstance(p, Choice):
        raise ValueError(f"space: {name}={p!r} is not an Int, Float, LogFloat or Choice")


@dataclass
class Objective:
    """A user's training loop: `fn(config, steps, state) -> (points, state)` over `space`."""

    fn: Callable[[dict, int, Any], tuple]
    space: dict
    full_steps: int
    rungs: tuple | None = None  # search(): the early steps of the pruner's decisions (default: its own)
    name: str = field(default="objective")
    early_frac: float = 0.1  # evo.run --objective: the early budget, as a fraction of full_steps
    baseline: dict | None = None  # evo.run --objective: generation 0's first architecture (default: the centre)
    # Optional hooks for an objective with more than a loss curve (the GPT of evo.gpt_objective fills them):
    preset: Any = None  # a GeneSpace (models.presets.Preset) that evo.run searches instead of `space`
    evaluate: Callable | None = None  # evo.run: task -> the trainer's whole result (evo.evaluate's shape)
    step_cost: Callable | None = None  # (space, genes, data) -> one step's cost, known before (default 1)
    duration: Callable | None = None  # (space, task, cost, done) -> steady clock length (default: cost)
    cost_unit: str = "training steps"  # what step_cost counts
    logs_model: bool = False  # evo.run measures the best model's inference and logs it to MLflow

    def __post_init__(self):
        if not callable(self.fn):
            raise ValueError(f"Objective: fn must be callable, got {self.fn!r}")
        if not isinstance(self.space, dict) or not self.space:
            raise ValueError(f"Objective: space must be a non-empty dict, got {self.space!r}")
        for name, p in self.space.items():
            _check(name, p)
        if not isinstance(self.full_steps, int) or self.full_steps < 2:
            raise ValueError(f"Objective: full_steps must be an integer >= 2, got {self.full_steps!r}")
        if not 0 < self.early_frac < 1:
            raise ValueError(f"Objective: early_frac must be in (0, 1), got {self.early_frac!r}")
        if self.baseline is not None and set(self.baseline) - set(self.space):
            raise ValueError(f"Objective: baseline names {sorted(set(self.baseline) - set(self.space))} "
                             f"that are not in the space")
        for hook in ("evaluate", "step_cost", "duration"):
            if getattr(self, hook) is not None and not callable(getattr(self, hook)):
                raise ValueError(f"Objective: {hook} must be callable, got {getattr(self, hook)!r}")
        if self.rungs is not None and not all(isinstance(r, int) and 0 < r < self.full_steps
                                              for r in self.rungs):
            raise ValueError(f"Objective: rungs must be integers in (0, full_steps), got {self.rungs!r}")


def trial_runner(objective: Objective, pruner) -> Callable:
    """The Optuna objective that drives `objective.fn` rung by rung."""
    import optuna

    F = objective.full_steps

    def run(trial):
        try:
            return _run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as e:  # the trial FAILs; its error stays in the study (and in MLflow)
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            raise

    def _run(trial):
        config = {name: p.suggest(trial, name) for name, p in objective.space.items()}
        trial.set_user_attr("full_steps", F)
        # the DimorphPruner's rungs (another pruner: one call to the full budget, judged point by point)
        rungs = pruner.budgets([])[0] if getattr(pruner, "full_step", None) is not None else ()
        targets = sorted({r for r in rungs if r < F} | {F})
        state, done, best = None, 0, math.inf
        for target in targets:
            points, state = objective.fn(config, target, state)
            for step, loss in sorted((int(s), float(v)) for s, v in points):
                if not done < step <= target:
                    raise ValueError(f"{objective.name}: point at step {step} is outside ({done}, "
                                     f"{target}] (each call returns only its new points)")
                trial.report(loss, step)
                if math.isfinite(loss):
                    best = min(best, loss)
                if not math.isfinite(loss) or trial.should_prune():
                    raise optuna.TrialPruned()
            done = target
        if not math.isfinite(best):
            raise ValueError(f"{objective.name}: no finite loss reported for {config}")
        return best
    return run


def search(objective: Objective, budget: float | None = 20.0, n_trials: int | None = None,
           seed: int = 0, storage: str | None = None, study_name: str | None = None,
           keep: float = 1 / 3, sampler=None, pruner=None, tracking_uri: str | None = None,
           experiment: str | None = None):
    """Search `objective` until `budget` full trainings (in steps) or `n_trials` trials: a study.
    With `tracking_uri` (or `experiment`), each finished trial is logged to MLflow as well
    (evo.tracking.studies: the study a parent run, each trial a child)."""
    import optuna

    from evo.optuna_search import DimorphPruner, DimorphSampler

    if budget is None and n_trials is None:
        raise ValueError("search: give a budget (full trainings) or n_trials")
    if budget is not None and not budget > 0:
        raise ValueError(f"search: budget must be > 0 full trainings, got {budget!r}")
    F = objective.full_steps
    pruner = pruner or DimorphPruner(keep=keep, full_step=F,
                                     **({"early_step": list(objective.rungs)} if objective.rungs else {}))
    study = optuna.create_study(study_name=study_name or objective.name, storage=storage,
                                load_if_exists=True, direction="minimize",
                                sampler=sampler or DimorphSampler(seed=seed), pruner=pruner)
    limit = None if budget is None else budget * F

    def stop(study, _trial):
        if limit is not None and spent_steps(study) >= limit:
            study.stop()
    if limit is not None and spent_steps(study) >= limit:
        return study
    callbacks = [stop]
    logger = None
    if tracking_uri is not None or experiment is not None:
        from evo.tracking.studies import StudyLogger
        logger = StudyLogger(tracking_uri, experiment or "dimorph-optuna", full_steps=F)
        callbacks.insert(0, logger)
    try:
        study.optimize(trial_runner(objective, pruner), n_trials=n_trials, callbacks=callbacks,
                       catch=(Exception,))
    finally:
        if logger is not None:
            logger.finish(study)
    return study


def load_objective(spec: str) -> Objective:
    """`package.module:name` -> the Objective it names (a clear error otherwise)."""
    mod, sep, name = spec.partition(":")
    if not sep or not mod or not name:
        raise ValueError(f"--objective must be package.module:name, got {spec!r}")
    try:
        obj = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--objective {spec!r}: {e}") from None
    obj = obj() if callable(obj) and not isinstance(obj, Objective) else obj
    if not isinstance(obj, Objective):
        raise ValueError(f"--objective {spec!r} is a {type(obj).__name__}, not an evo.objective.Objective")
    return obj


@functools.lru_cache(maxsize=8)
def loaded_objective(spec: str) -> Objective:
    """load_objective(spec), once per process: the search asks for its objective before every
    evaluation, and a factory objective is then built once."""
    return load_objective(spec)


def cli(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evo.objective",
                                 description="Search your own model through an Optuna study (evo.objective)")
    ap.add_argument("--objective", required=True, help="package.module:name of an Objective")
    ap.add_argument("--budget", type=float, default=20.0, help="full trainings (default 20)")
    ap.add_argument("--trials", type=int, default=None, help="stop after this many trials")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--storage", default=None, help="an Optuna storage URL, e.g. sqlite:///search.db")
    ap.add_argument("--study", default=None, help="the study's name (default: the objective's)")
    ap.add_argument("--keep", type=float, default=1 / 3, help="fraction kept at each rung")
    ap.add_argument("--tracking-uri", default=None, help="also log each finished trial to this MLflow store "
                    "(e.g. sqlite:///mlflow.db)")
    ap.add_argument("--experiment", default=None, help="the MLflow experiment (default dimorph-optuna)")
    a = ap.parse_args(argv)
    try:
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = search(load_objective(a.objective), budget=a.budget, n_trials=a.trials, seed=a.seed,
                       storage=a.storage, study_name=a.study, keep=a.keep, tracking_uri=a.tracking_uri,
                       experiment=a.experiment)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from optuna.trial import TrialState
    print(trials_line(study))
    if any(t.state == TrialState.COMPLETE for t in study.trials):
        print(f"best loss {study.best_value:.6g} with {study.best_params}")
    return 0


if __name__ == "__main__":  # run as evo.objective itself, so that a user's Objective is this class
    from evo.objective import cli as _cli
    sys.exit(_cli())
