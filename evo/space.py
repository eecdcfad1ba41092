"""What a search searches and what each of its trainings costs: the parts that need the models.

`search_preset` is the space (a preset with the config's budget overrides, or a table's rows);
`step_cost` what one training step of an architecture is charged, known before it runs;
`duration` a task's length on the steady-state scheduler's virtual clock. evo.genome stays pure
(vectors and genes); this module is where the model, the data's vocabulary and the tables come in.
"""
from __future__ import annotations

import json
from dataclasses import replace

from models.presets import Preset


def search_objective(cfg):
    """The Objective (evo.objective) a live run searches: --objective's, else the GPT of --preset
    (evo.gpt_objective); None for --table, whose rows are the evaluation. Loaded once per spec:
    the Runner asks for its step cost before every evaluation."""
    if cfg.table:
        return None
    from evo.objective import loaded_objective

    return loaded_objective(cfg.objective or f"evo.gpt_objective:{cfg.preset}")


def trains_model(cfg) -> bool:
    """Whether a run trains a model of models/ that the end of a search measures and logs (the GPT
    objective, of --preset or --objective evo.gpt_objective:<preset>), with its dataset."""
    obj = search_objective(cfg)
    return obj is not None and obj.logs_model


def search_preset(cfg) -> Preset:
    """The space a run searches: its objective's (for the GPT, its preset) with the config's budget
    overrides, or --table's space."""
    if cfg.table:
        from evo.table import load_table
        return load_table(cfg.table).space()
    from evo.objective_space import objective_space

    return objective_space(search_objective(cfg), cfg.full_steps, cfg.early_frac)


def step_cost(cfg, preset: Preset, genes: dict) -> float:
    """What one training step of `genes` is charged, known before it runs: the objective's step cost
    (the GPT: exactly the training FLOPs the trainer will count; a user's objective without one: 1,
    a training step), or the table's cost per step for --table. The runner checks it before every
    evaluation so that a search never spends more than --budget-flops."""
    if cfg.table:
        from evo.table import load_table
        t = load_table(cfg.table)
        return float(t.cost_per_step[t.row_of(genes)])
    obj = search_objective(cfg)
    return 1.0 if obj.step_cost is None else float(obj.step_cost(preset, genes, cfg.data))


_STEP_FLOPS: dict = {}


def live_step_flops(preset: Preset, key: str, data: str | None) -> float:
    """Training FLOPs of one step of the GPT of `key`'s genes (evo.gpt_objective's step cost)."""
    cache_key = (repr(preset), key, data)
    if cache_key not in _STEP_FLOPS:
        import torch

        from evo.evaluate import token_data
        from models.gpt import GPT

        gpt_cfg, tc = preset.configs(json.loads(key), token_data(data, preset).vocab_size)
        with torch.device("meta"):  # counts parameters without allocating them
            model = GPT(gpt_cfg)
        _STEP_FLOPS[cache_key] = model.flops_per_token() * tc.batch_size * preset.block_size
    return _STEP_FLOPS[cache_key]


def duration(cfg, preset: Preset, task, cost: float, done: int) -> float:
    """A task's length on the virtual clock of steady-state scheduling: the objective's duration
    (the GPT: live_duration), else its cost; a table's tasks last their cost."""
    obj = search_objective(cfg)
    return cost if obj is None or obj.duration is None else float(obj.duration(preset, task, cost, done))


def live_duration(preset: Preset, task, cost: float, done: int) -> float:
    """The GPT's task length: its training FLOPs (`cost`, for steps done+1 .. task.steps) plus the
    forward FLOPs of the evaluations it runs (a third of a training token's per token, over the
    preset's fixed windows; 35-45% of an early training's time on the tiny preset)."""
    _, tc = preset.configs(task.genes, vocab_size=2)  # the schedule only; the vocabulary does not matter
    evals = sum(tc.evaluates_at(k) or k == task.steps for k in range(done + 1, task.steps + 1)) + (done == 0)
    windows = preset.n_val_windows + preset.n_train_eval_windows
    per_step = cost / max(1, task.steps - done)  # B x T tokens of 6N; an evaluation: windows x T of 2N
    return cost + evals * per_step * windows / (3 * tc.batch_size)
