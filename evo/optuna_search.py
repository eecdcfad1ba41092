"""Dimorph inside Optuna: the males as a sampler, the females as a pruner.

    import optuna
    from evo.optuna_search import DimorphPruner, DimorphSampler

    study = optuna.create_study(sampler=DimorphSampler(seed=0), pruner=DimorphPruner())
    study.optimize(objective, n_trials=100)   # objective: trial.report(value, step); should_prune()

Both keep their state in the study (the trials, and the study's user attribute `dimorph_formula`),
so they work with any storage, an RDB storage shared by several processes included. The rules are
in evo.optuna_sampler and evo.optuna_pruner.
"""
from evo.optuna_pruner import ATTR, DimorphPruner
from evo.optuna_sampler import DimorphSampler, from_unit, to_unit

__all__ = ["ATTR", "DimorphPruner", "DimorphSampler", "from_unit", "to_unit"]
