"""What an Optuna study of evo.objective's route has cost, in training steps, and its trials in one
line: one rule for the search's budget (evo.objective.search), its command line and its MLflow runs
(evo.tracking.studies)."""
from __future__ import annotations


def trial_steps(trial, full_steps: int | None = None) -> int:
    """Training steps one trial cost: a complete one the full budget (its `full_steps` user
    attribute, else `full_steps`), any other the last step it reported (0 if none)."""
    from optuna.trial import TrialState

    if trial.state == TrialState.COMPLETE:
        return int(trial.user_attrs.get("full_steps", full_steps or 0))
    return int(trial.last_step or 0)


def spent_steps(study, full_steps: int | None = None) -> int:
    """Training steps the study's trials cost (trial_steps summed)."""
    return sum(trial_steps(t, full_steps) for t in study.get_trials(deepcopy=False))


def trials_line(study, full_steps: int | None = None) -> str:
    """'12 trials (7 complete, 5 pruned, 0 failed), 1500 training steps'."""
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return (f"{len(states)} trials ({states.count(TrialState.COMPLETE)} complete, "
            f"{states.count(TrialState.PRUNED)} pruned, {states.count(TrialState.FAIL)} failed), "
            f"{spent_steps(study, full_steps)} training steps")
