"""evo.optuna_search: the males as an Optuna sampler, the females as a pruner."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from evo.optuna_search import ATTR, DimorphPruner, DimorphSampler, from_unit, to_unit  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[1]


def objective(trial, steps: int = 20):
    """A curve per configuration: floor + 2 / step, reported at steps 1..`steps`."""
    x = trial.suggest_float("x", -3, 3)
    lr = trial.suggest_float("lr", 1e-4, 1, log=True)
    n = trial.suggest_int("n", 1, 8)
    c = trial.suggest_categorical("c", ["a", "b", "c"])
    floor = (x - 1) ** 2 + 0.1 * (math.log10(lr) + 2) ** 2 + 0.05 * abs(n - 4) + 0.3 * (c != "b")
    for step in range(1, steps + 1):
        value = floor + 2.0 / step
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


def run(seed: int, n: int = 40, **pruner):
    study = optuna.create_study(sampler=DimorphSampler(seed=seed), pruner=DimorphPruner(**pruner))
    study.optimize(objective, n_trials=n)
    return study


@pytest.mark.parametrize("dist, values", [
    (IntDistribution(1, 8), [1, 4, 8]),
    (IntDistribution(0, 10, step=5), [0, 5, 10]),
    (IntDistribution(1, 1000, log=True), [1, 31, 1000]),
    (FloatDistribution(-3, 3), [-3.0, 0.25, 3.0]),
    (FloatDistribution(1e-4, 1, log=True), [1e-4, 0.01, 1.0]),
    (FloatDistribution(0, 1, step=0.25), [0.0, 0.5, 1.0]),
    (CategoricalDistribution(["a", 2, None]), ["a", 2, None]),
])
def test_unit_round_trip(dist, values):
    for v in values:
        u = to_unit(dist, v)
        assert 0.0 <= u <= 1.0
        back = from_unit(dist, u)
        assert back == pytest.approx(v) if isinstance(v, float) else back == v
    assert from_unit(dist, -1.0) == from_unit(dist, 0.0) and from_unit(dist, 2.0) == from_unit(dist, 1.0)


def test_the_search_is_deterministic_under_a_seed_and_prunes():
    a, b, c = run(0, n=30), run(0, n=30), run(1, n=30)
    params = lambda s: [t.params for t in s.trials]  # noqa: E731
    assert params(a) == params(b) and params(a) != params(c)
    assert [t.state for t in a.trials] == [t.state for t in b.trials]
    pruned = sum(t.state == TrialState.PRUNED for t in a.trials)
    assert 8 <= pruned <= 26  # keep 1/3 at two rungs: most trials stop early
    assert min(t.value for t in a.trials if t.value is not None) < 0.8  # floor 0 + 2 / 20 = 0.1 best
    # the first 10 trials are uniform draws; the later ones are bred and stay in bounds
    for t in a.trials:
        assert -3 <= t.params["x"] <= 3 and 1e-4 <= t.params["lr"] <= 1 and 1 <= t.params["n"] <= 8


def test_bred_trials_beat_the_uniform_ones():
    s = run(0, n=60, keep=1.0)  # keep everything: compare sampling alone
    first = sorted(t.value for t in s.trials[:10])
    later = sorted(t.value for t in s.trials[30:])
    assert later[len(later) // 2] < first[len(first) // 2]


def _complete(study, value_at, final, steps=range(1, 21)):
    study.add_trial(create_trial(params={}, distributions={}, value=final,
                                 intermediate_values={s: value_at(s) for s in steps}))


def test_the_pruner_keeps_the_top_fraction_at_the_rung():
    study = optuna.create_study(pruner=DimorphPruner(keep=0.5, early_step=5, min_seen=4, n_fit=100))
    for floor in (0.1, 0.2, 0.3, 0.4):
        _complete(study, lambda s, f=floor: f + 1.0 / s, floor + 0.05)
    good, bad = study.ask(), study.ask()
    for s in range(1, 5):  # before the rung nothing is pruned, however bad
        good.report(0.15 + 1.0 / s, s)
        bad.report(9.0 + 1.0 / s, s)
        assert not good.should_prune() and not bad.should_prune()
    good.report(0.15 + 0.2, 5)
    bad.report(0.35 + 0.2, 5)
    # at step 5 the 6 seen values are 0.3 .. 0.6 (+0.2): good ranks 2nd (kept), bad 5th (pruned)
    assert not good.should_prune() and bad.should_prune()
    good.report(float("nan"), 6)
    assert good.should_prune()  # a non-finite report always stops the trial


def test_the_formula_lives_in_the_study_and_is_refitted_as_trials_complete():
    study = run(0, n=60, keep=1.0)  # every trial completes: fits at 10, 15, 23, 35, 53
    stored = study.user_attrs[f"{ATTR}@2"]  # rungs: ceil(20 / 60) = 1 and ceil(0.1 * 20) = 2
    assert stored["E"] == 2 and stored["F"] == 20 and stored["n"] == 53
    assert stored["trials"] == sorted(stored["trials"]) and len(stored["trials"]) == 53
    assert stored["doc"]["format"] == "dimorph-predictor"


def test_a_second_handle_reads_the_stored_formula_and_decides_alike(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url, sampler=DimorphSampler(seed=0),
                                pruner=DimorphPruner(keep=0.5))
    study.optimize(objective, n_trials=60, callbacks=[
        lambda s, _: len(s.get_trials(states=(TrialState.COMPLETE,))) >= 12 and s.stop()])
    first = DimorphPruner(keep=0.5)
    other = DimorphPruner(keep=0.5)
    monkeypatch.setattr(other, "fit", lambda *a: pytest.fail("the second handle refitted"))
    handle = optuna.load_study(study_name="s", storage=url, pruner=other)
    stored = {k: v["n"] for k, v in handle.user_attrs.items() if k.startswith(ATTR)}
    assert stored and all(n >= 10 for n in stored.values())
    for t in study.get_trials():
        fake = t  # judge each finished trial as if its last report had just come in
        assert first.prune(study, fake) == other.prune(handle, fake)


SCRIPT = textwrap.dedent("""
    import math, sys, optuna
    from evo.optuna_search import DimorphPruner, DimorphSampler
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sys.path.insert(0, sys.argv[3])
    from test_optuna_search import objective
    study = optuna.load_study(study_name="shared", storage=sys.argv[1],
                              sampler=DimorphSampler(seed=int(sys.argv[2])),
                              pruner=DimorphPruner(keep=0.5, early_step=3, pop=16, gens=5))

    def tagged(trial):
        trial.set_user_attr("process", int(sys.argv[2]))
        return objective(trial, steps=8)
    done = lambda s: len(s.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    study.optimize(tagged, n_trials=40, callbacks=[lambda s, _: done(s) >= 14 and s.stop()])
""")


def test_two_processes_share_one_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.create_study(study_name="shared", storage=url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, url, str(seed), str(ROOT / "tests")],
                              env=env, stderr=subprocess.PIPE, text=True) for seed in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=url)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert {t.user_attrs["process"] for t in trials} == {0, 1}  # both wrote to the one study
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 14 and len(trials) > len(complete)
    stored = study.user_attrs[f"{ATTR}@3"]  # the formula of the rung at step 3 is in the storage
    assert 10 <= stored["n"] <= len(complete) and set(stored["trials"]) <= {t.number for t in complete}


def test_maximize_is_judged_on_the_negated_value():
    study = optuna.create_study(direction="maximize",
                                pruner=DimorphPruner(keep=0.5, early_step=5, min_seen=4, n_fit=100))
    for floor in (0.1, 0.2, 0.3, 0.4):
        _complete(study, lambda s, f=floor: f - 1.0 / s, floor)
    low = study.ask()
    for s in range(1, 6):
        low.report(-1.0 / s, s)
    assert low.should_prune()


@pytest.mark.parametrize("make, word", [
    (lambda: DimorphSampler(population=1), "population=1"),
    (lambda: DimorphSampler(cxpb=1.5), "cxpb=1.5"),
    (lambda: DimorphPruner(keep=0), "keep=0"),
    (lambda: DimorphPruner(early_frac=(0.1, 1.2)), "early_frac=(0.1, 1.2)"),
    (lambda: DimorphPruner(early_step=50, full_step=20), "early_step=50"),
    (lambda: DimorphPruner(n_fit=3), "n_fit=3"),
])
def test_bad_settings_are_named(make, word):
    with pytest.raises(ValueError, match=word.replace("(", r"\(").replace(")", r"\)")):
        make()
