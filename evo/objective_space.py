"""A user's Objective (evo.objective) as the searched space and the evaluation of `evo.run`'s own
search: `python -m evo.run --objective package.module:name` runs the co-evolution (or any mode,
peer, --steady, --rungs, executor, MLflow, checkpoint and resume) on it, as it does on a table.

- The space: each declared parameter is a gene on the unit cube (Int: equal bins; Float and
  LogFloat: a range, log for LogFloat; Choice: equal bins in the given order), the baseline is the
  Objective's `baseline` or every gene at the centre of the cube.
- An evaluation: `fn(config, steps, state)` from the task's saved state (the pickled user state and
  the points so far), the points it returns appended; the result has the trainer's shape with the
  reported losses as both the training and the validation curve. Cost: one unit per training step.
  A non-finite loss is a diverged training (worst fitness, charged the steps it reached); an
  exception is a failed one (worst fitness, charged nothing, its traceback in the result).
"""
from __future__ import annotations

import math
import os
import pickle
import time
import traceback
from dataclasses import dataclass, field
from typing import Sequence

from models.presets import ChoiceParam, FloatParam, GeneSpace, IntParam, with_budgets


@dataclass(frozen=True)
class ObjectiveSpace(GeneSpace):
    """An Objective's genes on the unit cube, duck-typed as a Preset for the engine and the peers."""

    name: str
    full_steps: int
    early_steps: int
    space: tuple
    baseline: dict = field(compare=False)

    @property
    def early_frac(self) -> float:
        return self.early_steps / self.full_steps

    def decode(self, u: Sequence[float]) -> dict:
        if len(u) != len(self.space):
            raise ValueError(f"genome must be {len(self.space)} numbers, got {list(u)!r}")
        return {p.name: p.decode(min(1.0, max(0.0, float(x)))) for p, x in zip(self.space, u)}



def objective_space(obj, full_steps: int | None = None, early_frac: float | None = None) -> ObjectiveSpace:
    """The ObjectiveSpace of an evo.objective.Objective (budgets: the config's overrides, else its
    own); an objective with a `preset` (the GPT) is searched on that preset, with the overrides."""
    from evo.objective import Choice, Float, Int

    if obj.preset is not None:
        return with_budgets(obj.preset, full_steps, early_frac)

    params = []
    for name, p in obj.space.items():
        if isinstance(p, Int):
            params.append(IntParam(name, int(p.low), int(p.high)))
        elif isinstance(p, Float):
            params.append(FloatParam(name, float(p.low), float(p.high), log=p.log))
        elif isinstance(p, Choice):
            params.append(ChoiceParam(name, p.values))
    F = full_steps or obj.full_steps
    frac = early_frac if early_frac is not None else obj.early_frac
    E = max(1, min(F - 1, int(round(frac * F))))
    centre = {p.name: p.decode(0.5) for p in params}
    base = dict(centre, **(obj.baseline or {}))
    for p in params:
        p.encode(base[p.name])  # a baseline value outside the space is refused, naming it
    return ObjectiveSpace(name=f"objective:{obj.name}", full_steps=F, early_steps=E, space=tuple(params),
                          baseline=base)


class ObjectiveEvaluator:
    """A picklable evaluation function for the executors: `fn(task) -> result` through the Objective
    named by `spec` (package.module:name, imported once per process)."""

    def __init__(self, spec: str):
        self.spec = spec

    def __call__(self, task) -> dict:
        from evo.objective import loaded_objective

        obj = loaded_objective(self.spec)
        if obj.evaluate is not None:  # an objective with its own whole result (the GPT: evo.evaluate)
            return obj.evaluate(task)
        saved = {"state": None, "points": []}
        if task.load_state:
            with open(task.load_state, "rb") as fh:
                saved = pickle.load(fh)
        t0 = time.perf_counter()
        done = max((s for s, _ in saved["points"]), default=0)
        try:
            seed = {"seed": task.seed} if takes_seed(obj.fn) else {}
            new, state = obj.fn(dict(task.genes), task.steps, saved["state"], **seed)
            new = sorted((int(s), float(v)) for s, v in new)
            bad = [s for s, _ in new if not done < s <= task.steps]
            if bad:
                raise ValueError(f"{obj.name}: point at step {bad[0]} is outside ({done}, {task.steps}]")
        except Exception as e:  # the user's loop failed: a failed evaluation, as a crashed training
            return failed(task, f"{type(e).__name__}: {e}", traceback.format_exc(), time.perf_counter() - t0)
        points = saved["points"] + new
        if task.save_state:
            os.makedirs(os.path.dirname(task.save_state) or ".", exist_ok=True)
            tmp = f"{task.save_state}.tmp"
            with open(tmp, "wb") as fh:
                pickle.dump({"state": state, "points": points}, fh)
            os.replace(tmp, task.save_state)
        return result(task, points, time.perf_counter() - t0)


def takes_seed(fn) -> bool:
    """Whether an objective's fn takes the search's seed (a `seed` parameter)."""
    import inspect

    try:
        return "seed" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


def result(task, points: list, seconds: float) -> dict:
    """The trainer's result shape from the points so far (losses as both train and validation)."""
    finite = [(s, v) for s, v in points if math.isfinite(v)]
    bad = next((s for s, v in points if not math.isfinite(v)), None)
    reached = task.steps if bad is None else bad
    diverged = bad is not None or not finite
    best = min(finite, key=lambda p: p[1]) if finite else None
    steps = [s for s, _ in points]
    losses = [v if math.isfinite(v) else None for _, v in points]
    return {
        "key": task.key, "phase": task.phase, "steps": int(reached),
        "train_steps": steps, "train_losses": losses, "eval_steps": steps, "val_losses": losses,
        "train_eval_losses": losses,
        "best_val_loss": best[1] if best else None, "best_val_step": best[0] if best else 0,
        "final_val_loss": None if diverged else finite[-1][1],
        "final_train_loss": None if diverged else finite[-1][1],
        "diverged": diverged,
        "diverge_reason": (f"a non-finite loss at step {bad}" if bad is not None else
                           "no loss reported" if not finite else None),
        "wall_time": seconds, "eval_seconds": seconds, "flops": float(reached), "tokens": 0,
        "n_params": None, "tokens_per_s": 0.0, "error": None}


def failed(task, error: str, trace: str, seconds: float) -> dict:
    """A crashed evaluation, in the shape of evo.evaluate's (no FLOPs: it is charged nothing)."""
    return {"error": error, "traceback": trace, "diverged": False, "key": task.key, "phase": task.phase,
            "eval_seconds": seconds}
