"""evo.pruner.FormulaPruner: prunes a trial whose predicted final loss is worse than the k-th best
completed one, on hand-made curves through a real Optuna study."""
import json
import math

import pytest

optuna = pytest.importorskip("optuna")

from optuna.trial import TrialState  # noqa: E402

from evo.pruner import FormulaPruner  # noqa: E402
from primitives.export import export_predictor  # noqa: E402
from primitives.features import CURVE_FEATURES  # noqa: E402
from primitives.gp import tree_from_string  # noqa: E402
from primitives.pset import make_pset  # noqa: E402

E, F = 30, 100
optuna.logging.set_verbosity(optuna.logging.WARNING)


def formula(tmp_path, text="v_last", a=1.0, b=-0.5, name="f.json", early=E):
    """A predictor file: predicted final = a * tree + b (v_last: the last report at step <= E)."""
    pset = make_pset(CURVE_FEATURES)
    doc = export_predictor(tree_from_string(text, pset), pset, calibration={"a": a, "b": b},
                           early_steps=early, full_steps=F)
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def curve(start, end):
    """Reports every 10 steps, falling linearly from `start` at step 10 to `end` at step F."""
    return {s: start + (end - start) * (s - 10) / (F - 10) for s in range(10, F + 1, 10)}


def run(pruner, curves):
    """One trial per curve, in order; each returns its best (smallest) reported value."""
    study = optuna.create_study(direction="minimize", pruner=pruner)
    queue = list(curves)
    pruned_at = {}

    def objective(trial):
        c = queue[trial.number]
        for step, v in sorted(c.items()):
            trial.report(v, step)
            if trial.should_prune():
                pruned_at[trial.number] = step
                raise optuna.TrialPruned()
        return min(c.values())

    study.optimize(objective, n_trials=len(curves))
    return study, pruned_at


def test_prunes_a_worse_predicted_final_and_keeps_a_better_one(tmp_path):
    pruner = FormulaPruner(formula(tmp_path), E, F)
    first = curve(3.0, 2.0)    # completes: final 2.0
    worse = curve(3.4, 2.6)    # v_last at step 30 = 3.222..., predicted 2.72 > 2.0: pruned at step 30
    better = curve(2.6, 1.4)   # v_last = 2.333..., predicted 1.83 < 2.0: kept, final 1.4
    study, pruned_at = run(pruner, [first, worse, better])
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    assert pruned_at == {1: E}
    assert pruner.predict(study.trials[1], study.study_name) == pytest.approx(worse[30] - 0.5)
    assert pruner.predict(study.trials[2], study.study_name) == pytest.approx(better[30] - 0.5)
    assert study.best_value == pytest.approx(1.4)


def test_nothing_is_pruned_before_warmup_or_the_startup_trials(tmp_path):
    worse = curve(3.4, 2.6)
    # k=2: one completed trial is not enough to have a 2nd best
    study, pruned_at = run(FormulaPruner(formula(tmp_path), E, F, k=2), [curve(3.0, 2.0), worse])
    assert pruned_at == {}
    # with a 2nd completed trial (final 2.2), the worse one (predicted 2.72) goes at step E
    study, pruned_at = run(FormulaPruner(formula(tmp_path), E, F, k=2),
                           [curve(3.0, 2.0), curve(3.1, 2.2), worse])
    assert pruned_at == {2: E}
    # warmup_steps beyond E: the same trial is judged at step 60 only
    study, pruned_at = run(FormulaPruner(formula(tmp_path), E, F, warmup_steps=60), [curve(3.0, 2.0), worse])
    assert pruned_at == {1: 60}


def test_the_kth_best_improves_later(tmp_path):
    """Predicted 1.9 beats the first final (2.0) at step E, but not the next trial's 1.5: pruned then."""
    pruner = FormulaPruner(formula(tmp_path), E, F)
    study = optuna.create_study(direction="minimize", pruner=pruner)
    slow = curve(2.6, 1.6)  # v_last = 2.4: predicted 1.9
    first = study.ask()
    for s, v in curve(3.0, 2.0).items():
        first.report(v, s)
    study.tell(first, 2.0)
    t = study.ask()
    verdicts = []
    for s, v in sorted(slow.items()):
        t.report(v, s)
        verdicts.append((s, t.should_prune()))
        if s == 40:  # meanwhile another trial completes at 1.5
            other = study.ask()
            study.tell(other, 1.5)
    assert [s for s, p in verdicts if p] == [s for s in sorted(slow) if s >= 50]
    assert (E, False) in verdicts


def test_non_finite_reports_are_pruned_and_bad_setups_refused(tmp_path):
    pruner = FormulaPruner(formula(tmp_path), E, F)
    nan = {10: 3.0, 20: math.nan}
    study, pruned_at = run(pruner, [nan])
    assert pruned_at == {0: 20}
    study = optuna.create_study(direction="maximize", pruner=FormulaPruner(formula(tmp_path), E, F))
    trial = study.ask()
    trial.report(1.0, 40)
    with pytest.raises(ValueError, match="minimize"):
        trial.should_prune()
    pset = make_pset(CURVE_FEATURES)
    raw = export_predictor(tree_from_string("v_last", pset), pset)
    (tmp_path / "raw.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="no calibration"):
        FormulaPruner(tmp_path / "raw.json", E, F)
    with pytest.raises(ValueError, match="k must be"):
        FormulaPruner(formula(tmp_path), E, F, k=0)
    with pytest.raises(ValueError, match="early_steps"):
        FormulaPruner(formula(tmp_path), F + 1, F)


def test_stages_judge_each_report_with_the_formula_of_its_budget(tmp_path):
    """Formulas at E=20 (v_last - 0.2) and E=30 (v_last + 0.1): a trial can go at either stage."""
    pruner = FormulaPruner([formula(tmp_path, b=-0.2, name="e20.json", early=20),
                            formula(tmp_path, b=0.1, name="e30.json")], [20, E], F)
    assert pruner.early_steps == 20 and pruner.warmup_steps == 20
    first = curve(3.0, 2.0)   # completes: final 2.0
    a = curve(2.6, 1.4)       # v_last(20) = 2.467: 2.267 > 2.0, pruned at the first stage
    b = curve(2.2, 1.9)       # 1.967 kept at 20; v_last(30) = 2.133: 2.233 > 2.0, pruned at 30
    c = curve(1.9, 1.0)       # 1.6 at 20, 1.8 at 30: kept
    study, pruned_at = run(pruner, [first, a, b, c])
    assert pruned_at == {1: 20, 2: 30}
    assert study.trials[3].state == TrialState.COMPLETE
    with pytest.raises(ValueError, match="as many early_steps"):
        FormulaPruner([formula(tmp_path)], [20, 30], F)
    with pytest.warns(UserWarning, match="fitted at early/full 30/100 judges trials at 20/100"):
        FormulaPruner(formula(tmp_path), 20, F)
