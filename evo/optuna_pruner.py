"""The females as an Optuna pruner: a formula evolved online from the study's complete trials
predicts each trial's final value from its early reports, and at the early step only the trials
whose prediction ranks in the top `keep` fraction go on.

    study = optuna.create_study(sampler=DimorphSampler(seed=0), pruner=DimorphPruner())

The rules, at each `should_prune()` of a trial (a minimizing study; maximize is judged on -value):
- a trial whose latest report is not finite (NaN, inf) is pruned;
- the rungs: the early steps E of `early_step` (one or several), or else the fractions `early_frac`
  of the full step F (`full_step`, or else the largest last step of the complete trials; before any
  trial completes nothing is pruned), each rounded up to a step;
- a trial is judged once per rung, at its first report at a step >= E (a report that passes several
  rungs at once is judged at the last of them): it is pruned when its predicted final value ranks
  below the top `keep` fraction of the predictions of every trial that has reached E (complete,
  pruned or running; itself included; ties keep), and only once at least `min_seen` trials have
  reached E; at any other report it goes on;
- the prediction: with at least `n_fit` complete trials, the formula that evo.fit evolves (the
  female population, seed `seed`) on their reports at steps <= E and their final values, from the
  features of primitives.features; before, and for a trial with fewer than two reports at steps
  <= E, the last report at a step <= E (the reference rule v_last).

State lives in the study: the formula is refitted when the number of complete trials has grown by
`refit_growth` since the last fit, and stored, with the count it was fitted on, in the study's user
attribute `dimorph_formula@E` (one per rung), where every process sharing the storage reads it (two processes that
refit at the same moment store the same formula when they saw the same trials; otherwise the last
one written is used). Everything else is recomputed from the trials.
"""
from __future__ import annotations

import math
import random
import warnings

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from evo.pruner import report_verdict
from primitives.features import curve_features

ATTR = "dimorph_formula"
EARLY_FRAC = (1 / 60, 0.1)  # the default rungs, as fractions of the full step


def _points(trial: FrozenTrial, E: int, sign: float) -> tuple[list[int], list[float]]:
    pts = sorted((s, sign * v) for s, v in trial.intermediate_values.items()
                 if s <= E and v is not None and math.isfinite(v))
    return [s for s, _ in pts], [v for _, v in pts]


class DimorphPruner(optuna.pruners.BasePruner):
    """Keep the trials whose predicted final value ranks in the top `keep` at the early step.

    Args:
        keep: the fraction of the trials seen at the early step that go on (0 < keep <= 1).
        early_step: the step (or a list of steps) of the decisions; default: from `early_frac`.
        early_frac: the rungs as fractions of the full step (a float or a tuple), when
            `early_step` is not given.
        full_step: F, the step of a full training (default: the largest last step of the complete
            trials).
        min_seen: never prune before this many trials have reached E.
        n_fit: complete trials needed before a formula is evolved (evo.fit needs at least 9).
        refit_growth: refit once the complete trials number this many times the last fit's.
        pop, gens, seed: the formula population, its generations and its seed (evo.fit).
    """

    def __init__(self, keep: float = 1 / 3, early_step=None, early_frac=EARLY_FRAC,
                 full_step: int | None = None, min_seen: int = 5, n_fit: int = 10,
                 refit_growth: float = 1.5, pop: int = 32, gens: int = 15, seed: int = 0):
        fracs = tuple(early_frac) if isinstance(early_frac, (list, tuple)) else (early_frac,)
        steps = None if early_step is None else \
            tuple(early_step) if isinstance(early_step, (list, tuple)) else (early_step,)
        checks = (("keep", keep, 0 < keep <= 1),
                  ("early_frac", early_frac, fracs and all(0 < f < 1 for f in fracs)),
                  ("early_step", early_step, steps is None or
                   (steps and all(isinstance(e, int) and e > 0 for e in steps))),
                  ("full_step", full_step, full_step is None or
                   (isinstance(full_step, int) and full_step > 0)),
                  ("min_seen", min_seen, isinstance(min_seen, int) and min_seen >= 2),
                  ("n_fit", n_fit, isinstance(n_fit, int) and n_fit >= 9),
                  ("refit_growth", refit_growth, refit_growth > 1),
                  ("pop", pop, isinstance(pop, int) and pop >= 2),
                  ("gens", gens, isinstance(gens, int) and gens >= 0))
        for name, v, ok in checks:
            if not ok:
                raise ValueError(f"DimorphPruner: bad {name}={v!r}")
        if steps is not None and full_step is not None and max(steps) > full_step:
            raise ValueError(f"DimorphPruner: early_step={early_step} is after full_step={full_step}")
        self.keep, self.full_step = keep, full_step
        self.early_step = None if steps is None else tuple(sorted(set(steps)))
        self.early_frac = tuple(sorted(set(fracs)))
        self.min_seen, self.n_fit, self.refit_growth = min_seen, n_fit, refit_growth
        self.pop, self.gens, self.seed = pop, gens, seed
        self._loaded: dict[str, tuple] = {}   # study -> (stored doc's key, Predictor)
        self._feats: dict[tuple, dict] = {}   # (study, trial number, E, F) -> features

    # -- the budgets --------------------------------------------------------------------------------
    def budgets(self, complete: list[FrozenTrial]) -> tuple[tuple, int] | None:
        """(the rungs, F), or None while F is unknown (no complete trial and no `full_step`)."""
        F = self.full_step
        if F is None:
            lasts = [t.last_step for t in complete if t.last_step is not None]
            if not lasts:
                return None
            F = max(lasts)
        rungs = self.early_step if self.early_step is not None else \
            tuple(max(1, math.ceil(f * F - 1e-9)) for f in self.early_frac)
        return tuple(sorted({min(E, F) for E in rungs})), F

    # -- the formula --------------------------------------------------------------------------------
    def formula(self, study, complete: list[FrozenTrial], E: int, F: int, sign: float):
        """The stored formula (refitted first when the complete trials have grown enough), or None."""
        usable = [t for t in complete if len(_points(t, E, sign)[0]) >= 2
                  and t.value is not None and math.isfinite(t.value)]
        attr = f"{ATTR}@{E}"
        stored = study.user_attrs.get(attr)
        fresh = stored is not None and stored.get("E") == E and stored.get("F") == F
        if len(usable) >= self.n_fit and (not fresh or len(usable) >= self.refit_growth * stored["n"]):
            stored = self.fit(usable, E, F, sign)
            study.set_user_attr(attr, stored)
            fresh = True
        if not fresh:
            return None
        key = (stored["n"], E, F, stored["doc"]["tree"])
        cached = self._loaded.get((study.study_name, E))
        if cached is None or cached[0] != key:
            from primitives.export import load_predictor
            cached = (key, load_predictor(stored["doc"]))
            self._loaded[(study.study_name, E)] = cached
        return cached[1]

    def fit(self, trials: list[FrozenTrial], E: int, F: int, sign: float) -> dict:
        """Evolve a formula on the trials' reports up to E and final values (evo.fit.fit)."""
        from evo.fit import fit

        curves, finals = {}, {}
        for t in sorted(trials, key=lambda t: t.number):
            pts = _points(t, E, sign)
            curves[f"t{t.number}"] = {"train": pts, "val": pts, "line": 0}
            finals[f"t{t.number}"] = (sign * t.value,)
        saved = random.getstate(), np.random.get_state()
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                out = fit(curves, finals, E, F, seed=self.seed, pop=self.pop, gens=self.gens)
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
        return {"n": len(trials), "E": E, "F": F, "doc": out["doc"],
                "trials": [t.number for t in trials]}

    def predict(self, study_name: str, trial: FrozenTrial, E: int, F: int, sign: float, predictor):
        """The trial's predicted final value (sign-adjusted: lower is better)."""
        steps, values = _points(trial, E, sign)
        if not values:
            return math.inf
        if predictor is None or len(steps) < 2:
            return values[-1]
        key = (study_name, trial.number, E, F, sign)
        if key not in self._feats:
            with np.errstate(all="ignore"):
                self._feats[key] = curve_features(steps, values, steps, values, E, F)
        feats = self._feats[key]
        if not all(math.isfinite(feats[f]) for f in predictor.features):
            return values[-1]
        with np.errstate(all="ignore"):
            p = float(np.asarray(predictor(feats), dtype=float).reshape(-1)[0])
        return p if math.isfinite(p) else values[-1]

    # -- the decision -------------------------------------------------------------------------------
    def prune(self, study, trial: FrozenTrial) -> bool:
        if len(study.directions) != 1:
            raise ValueError("DimorphPruner judges one value: the study must have one objective")
        verdict = report_verdict(trial)
        if verdict is not None:
            return verdict
        step = trial.last_step
        sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        budgets = self.budgets(complete)
        if budgets is None:
            return False
        rungs, F = budgets
        crossed = [E for E in rungs if E <= step and not any(E <= s < step for s in trial.intermediate_values)]
        if not crossed:
            return False  # before the first rung, or every rung reached was judged at an earlier report
        E = crossed[-1]
        seen = [t for t in study.get_trials(deepcopy=False)
                if t.number != trial.number and t.last_step is not None and t.last_step >= E]
        if len(seen) + 1 < self.min_seen:
            return False
        predictor = self.formula(study, complete, E, F, sign)
        mine = self.predict(study.study_name, trial, E, F, sign, predictor)
        others = [self.predict(study.study_name, t, E, F, sign, predictor) for t in seen]
        better = sum(p < mine for p in others)
        return better >= max(1, math.ceil(self.keep * (len(others) + 1)))
