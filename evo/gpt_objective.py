"""The char-level GPT of models/ as a built-in Objective (evo.objective): one objective of the API
that a user's training loop also goes through, not a special case of the search.

    python -m evo.run --objective evo.gpt_objective:tiny          # the same search as --preset tiny
    python -m evo.objective --objective evo.gpt_objective:tiny    # the GPT through an Optuna study

    from evo.gpt_objective import gpt
    study = evo.objective.search(gpt("tiny", full_steps=200), budget=10)

`evo.gpt_objective:<preset>` names `gpt(<preset>)` for every preset of models.presets. Beyond a user's
objective (a loss curve per call, steps as the cost) the GPT fills the Objective's optional hooks:
- `preset`: the preset itself is the searched space (its genes, budgets and baseline architecture);
- `evaluate`: evo.evaluate.evaluate, the trainer's whole result (training and validation curves,
  FLOPs, parameters, throughput) for evo.run, which its executors call for a live search;
- `step_cost` and `duration`: a step is charged its training FLOPs, known before it runs, and the
  steady-state clock adds the evaluations' forward FLOPs (evo.space);
- `cost_unit` "FLOPs", and `logs_model`: the best architecture's inference speed is measured and the
  trained model is logged to MLflow at the end of a search.
Through Optuna (`fn`), a trial trains from the state of its last rung in memory and reports the
validation loss at the preset's evaluation steps; `seed` seeds the initialisation, batches and dropout.
"""
from __future__ import annotations

import math

from evo.objective import Choice, Float, Int, LogFloat, Objective
from models.presets import PRESETS, ChoiceParam, FloatParam, IntParam, get_preset, with_budgets


class GPTTrainer:
    """`fn(config, steps, state, seed=0) -> (points, state)` of the GPT objective: trains `config`
    up to `steps` from `state` (a models.train.TrainState, None first) on the preset's data."""

    def __init__(self, preset, data: str | None = None, device: str = "cpu"):
        self.preset, self.data, self.device = preset, data, device

    def __call__(self, config: dict, steps: int, state=None, seed: int = 0):
        from evo.evaluate import token_data
        from models.train import train

        data = token_data(self.data, self.preset)
        gpt_cfg, train_cfg = self.preset.configs(config, data.vocab_size, device=self.device)
        done = state.step if state is not None else 0
        res = train(gpt_cfg, train_cfg, data, steps=steps, seed=seed, state=state)
        points = [(s, v) for s, v in zip(res.eval_steps, res.val_losses) if s > done]
        if res.diverged and (not points or math.isfinite(points[-1][1])):
            points.append((max(res.steps, done + 1), math.nan))  # the contract's way to say "diverged"
        return points, res.state


def space_of(preset) -> dict:
    """The preset's params as the API's declarations (Int, Float, LogFloat, Choice), for Optuna."""
    out = {}
    for p in preset.space:
        if isinstance(p, IntParam):
            out[p.name] = Int(p.low, p.high)
        elif isinstance(p, FloatParam):
            out[p.name] = (LogFloat if p.log else Float)(p.low, p.high)
        elif isinstance(p, ChoiceParam):
            out[p.name] = Choice(*p.choices)
        else:
            raise ValueError(f"preset {preset.name!r}: gene {p.name!r} has no declaration in evo.objective")
    return out


def _evaluate(task) -> dict:
    from evo.evaluate import evaluate

    return evaluate(task)


def _step_cost(preset, genes: dict, data: str | None) -> float:
    from evo.genome import genes_key
    from evo.space import live_step_flops

    return live_step_flops(preset, genes_key(genes), data)


def _duration(preset, task, cost: float, done: int) -> float:
    from evo.space import live_duration

    return live_duration(preset, task, cost, done)


def gpt(preset: str = "tiny", full_steps: int | None = None, early_frac: float | None = None,
        data: str | None = None, device: str = "cpu") -> Objective:
    """The GPT of a preset (with optional budget overrides) as an Objective."""
    p = with_budgets(get_preset(preset), full_steps, early_frac)
    return Objective(GPTTrainer(p, data, device), space_of(p), full_steps=p.full_steps, name=f"gpt-{p.name}",
                     early_frac=p.early_frac, baseline=dict(p.baseline), preset=p, evaluate=_evaluate,
                     step_cost=_step_cost, duration=_duration, cost_unit="FLOPs", logs_model=True)


def __getattr__(name: str):
    """`evo.gpt_objective:<preset>`: the factory of that preset's GPT objective."""
    if name in PRESETS:
        return lambda: gpt(name)
    raise AttributeError(f"module 'evo.gpt_objective' has no attribute {name!r}; presets: {sorted(PRESETS)}")
