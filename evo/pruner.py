"""An Optuna pruner that stops a trial when an exported formula predicts its final loss is worse than
the k-th best final loss of the completed trials.

    import optuna
    from evo.pruner import FormulaPruner

    pruner = FormulaPruner("predictor.json", early_steps=60, full_steps=600)
    study = optuna.create_study(direction="minimize", pruner=pruner)

    def objective(trial):
        model = build(trial)
        best = float("inf")
        for step in range(1, 601):
            train_one_step(model)
            if step % 10 == 0:
                val = validation_loss(model)
                best = min(best, val)
                trial.report(val, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return best          # the value the formula predicts: the best validation loss

The formula sees the values a trial reported at steps <= early_steps as its curve, both as the
training curve (the features l10 ... l100, the slopes, sotl) and as the validation curve (v_last),
so fit it on curves of the same kind: reported values in both the `train` and `val` rows
(`evo.curves --experiment NAME --train-metric val_loss --val-metric val_loss` writes them from
your MLflow runs; `evo.fit` then fits the formula). It must carry a calibration (evo.fit exports
one), because its predictions are compared with final losses.

Rules, at each `should_prune()`:
- a trial whose latest reported value is not finite (NaN, inf) is pruned;
- before the trial has reported a step >= max(early_steps, warmup_steps), or while fewer than
  max(k, n_startup_trials) trials have completed, or when fewer than two of its reports lie at
  steps <= early_steps, nothing is pruned;
- otherwise the trial is pruned when its predicted final loss is above the k-th best value of the
  completed trials (equal: kept). The prediction is made once per trial (it depends only on the
  reports up to early_steps), while the k-th best keeps improving, so a trial kept at early_steps
  may be pruned at a later report.
Stages: given a list of formulas fitted at several early budgets (early_steps=[20, 60], say), each
report is judged by the formula of the largest budget it reached, so a trial can be pruned cheaply
at the first budget and, better informed, at the next ones.
Only single-objective studies that minimize are supported (ValueError otherwise).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from primitives.export import load_predictor
from primitives.features import ARCH_FEATURES, curve_features



def report_verdict(trial: FrozenTrial) -> bool | None:
    """What a trial's reports decide before any formula is asked, for every pruner here: nothing
    reported yet, go on (False); a NaN or infinite last report, prune (True); else None."""
    step = trial.last_step
    if step is None:
        return False
    return True if not math.isfinite(trial.intermediate_values[step]) else None

class FormulaPruner(optuna.pruners.BasePruner):
    """Prune a trial when the formula predicts a final loss worse than the k-th best completed one.

    Args:
        formula: an exported predictor (path to its JSON, or the loaded document) with a
            calibration; or a list of them, one per early budget in `early_steps` (stages: at each
            report the formula of the largest early budget reached judges the trial).
        early_steps: E: the formula reads the reports at steps <= E (its features are fractions of
            E); a list for a list of formulas.
        full_steps: F: the full budget of a trial (the formula's `early_frac` feature is E / F).
        k: compare with the k-th best final loss so far (1: the best).
        warmup_steps: never prune before a trial has reported this step (default: the smallest E).
        n_startup_trials: never prune before this many trials have completed (default: k).
        arch_features: for a formula using log_params / log_lr: a function of the trial giving
            {"n_params": ..., "lr": ...}.
    """

    def __init__(self, formula, early_steps, full_steps: int, k: int = 1,
                 warmup_steps: int | None = None, n_startup_trials: int | None = None,
                 arch_features: Callable[[FrozenTrial], dict] | None = None):
        many = isinstance(formula, (list, tuple))
        formulas = list(formula) if many else [formula]
        budgets = list(early_steps) if isinstance(early_steps, (list, tuple)) else [early_steps]
        if len(budgets) != len(formulas):
            raise ValueError(f"{len(formulas)} formula(s) need as many early_steps, got {early_steps!r}")
        for E in budgets:
            if not (isinstance(E, int) and isinstance(full_steps, int) and 0 < E <= full_steps):
                raise ValueError(f"need integers 0 < early_steps <= full_steps, got {E!r} and "
                                 f"{full_steps!r}")
        if len(set(budgets)) != len(budgets):
            raise ValueError(f"early_steps must differ from one formula to the next, got {budgets}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        self.stages = []
        for E, f in sorted(zip(budgets, formulas), key=lambda p: p[0]):
            predictor = load_predictor(str(f) if isinstance(f, Path) else f)
            if predictor.calibration is None:
                raise ValueError("the formula has no calibration, so its predictions are not losses "
                                 "that can be compared with final losses; export it with evo.fit")
            at = predictor.fitted_at
            if at and not math.isclose(at["early_frac"], E / full_steps, rel_tol=1e-9):
                warnings.warn(f"a formula fitted at early/full {at['early_steps']}/{at['full_steps']} "
                              f"judges trials at {E}/{full_steps}: features are fractions of the "
                              f"early budget, so its predictions may be off", stacklevel=2)
            needs = [n for n in predictor.features if n in ARCH_FEATURES]
            if needs and arch_features is None:
                raise ValueError(f"the formula uses {needs[0]!r}: pass arch_features=lambda trial: "
                                 f"{{'n_params': ..., 'lr': ...}}")
            self.stages.append((E, predictor))
        self.early_steps = self.stages[0][0]
        self.full_steps, self.k = full_steps, k
        self.warmup_steps = self.early_steps if warmup_steps is None else int(warmup_steps)
        self.n_startup_trials = k if n_startup_trials is None else max(k, int(n_startup_trials))
        self.arch_features = arch_features
        self._predicted: dict[tuple, float | None] = {}

    @property
    def predictor(self):
        """The (first) formula's loaded predictor."""
        return self.stages[0][1]

    def predict(self, trial: FrozenTrial, study_name: str = "") -> float | None:
        """The final loss predicted for a trial by the formula of the largest early budget E its
        reports reached, from its reports at steps <= E; None before the first E, with fewer than
        two such reports, or when a feature is not finite. Cached per trial and stage."""
        last = trial.last_step
        reached = [(E, p) for E, p in self.stages if last is not None and E <= last]
        if not reached:
            return None
        E, predictor = reached[-1]
        key = (study_name, trial.number, E)
        if key in self._predicted:
            return self._predicted[key]
        points = sorted((s, v) for s, v in trial.intermediate_values.items()
                        if s <= E and math.isfinite(v))
        pred = None
        if len(points) >= 2:
            steps = [s for s, _ in points]
            values = [v for _, v in points]
            arch = self.arch_features(trial) if self.arch_features else {}
            with np.errstate(all="ignore"):
                feats = curve_features(steps, values, steps, values, E, self.full_steps,
                                       n_params=arch.get("n_params"), lr=arch.get("lr"))
            if all(math.isfinite(feats[f]) for f in predictor.features):
                pred = float(predictor(feats))
        self._predicted[key] = pred
        return pred

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        if len(study.directions) != 1 or study.direction != StudyDirection.MINIMIZE:
            raise ValueError("FormulaPruner predicts a final loss: the study must minimize one value")
        verdict = report_verdict(trial)
        if verdict is not None:
            return verdict
        step = trial.last_step
        if step < max(self.early_steps, self.warmup_steps):
            return False
        done = sorted(t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                      if t.value is not None and math.isfinite(t.value))
        if len(done) < self.n_startup_trials:
            return False
        pred = self.predict(trial, study.study_name)
        return pred is not None and pred > done[self.k - 1]
