"""evo.objective: the Python API for your own training loop (and `evo.run --objective`)."""
from __future__ import annotations

import math

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

import objective_helpers as h  # noqa: E402
from evo.objective import Choice, Int, LogFloat, Objective, load_objective, search, spent_steps  # noqa: E402
from evo.objective import cli  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_search_keeps_to_the_budget_and_each_outcome_is_recorded():
    h.CALLS.clear()
    study = search(h.objective, budget=8, seed=0)
    states = [t.state for t in study.trials]
    spent = spent_steps(study)
    assert 8 * 30 <= spent < 8 * 30 + 30  # stops at the first trial that reaches the budget
    assert spent == sum(30 if t.state == TrialState.COMPLETE else (t.last_step or 0) for t in study.trials)
    for t in study.trials:
        mode = t.params["mode"]
        if mode == "crash":
            assert t.state == TrialState.FAIL
        elif mode == "nan":  # a non-finite loss stops the trial at its first report
            assert t.state == TrialState.PRUNED and t.last_step == 1
        elif t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(min(t.intermediate_values.values()))
            assert max(t.intermediate_values) == 30
    assert states.count(TrialState.COMPLETE) >= 3 and states.count(TrialState.PRUNED) >= 1
    # the loop is called rung by rung, each call from the state of the last: rungs 1 and 3 of 30
    done = next(t for t in study.trials if t.state == TrialState.COMPLETE)
    first = [c for c in h.CALLS if c[0] == done.params["x"]]
    assert [(d, s) for _, d, s in first] == [(0, 1), (1, 3), (3, 30)]


def test_a_search_is_deterministic_and_resumes_from_its_storage(tmp_path):
    a = search(h.objective, budget=5, seed=3)
    b = search(h.objective, budget=5, seed=3)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    url = f"sqlite:///{tmp_path / 'r.db'}"
    part = search(h.objective, budget=2, seed=3, storage=url, study_name="r")
    before = [t.params for t in part.trials]
    whole = search(h.objective, budget=5, seed=3, storage=url, study_name="r")  # the same study, continued
    assert 2 * 30 <= sum(30 if t.state == TrialState.COMPLETE else t.last_step or 0
                         for t in whole.trials[:len(before)]) < 3 * 30
    assert [t.params for t in whole.trials][:len(before)] == before
    assert [t.params for t in whole.trials] == [t.params for t in a.trials][:len(whole.trials)]
    assert 5 * 30 <= spent_steps(whole) < 6 * 30
    again = search(h.objective, budget=5, seed=3, storage=url, study_name="r")  # already spent: no trial
    assert len(again.trials) == len(whole.trials)


def test_the_optuna_route_has_a_command_line(capsys):
    assert cli(["--objective", "objective_helpers:objective", "--budget", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "training steps" in out and "best loss" in out
    assert cli(["--objective", "objective_helpers:nothing"]) == 2
    assert "objective_helpers:nothing" in capsys.readouterr().err


def test_evo_run_searches_a_users_objective_with_the_runner(tmp_path):
    """python -m evo.run --objective: the co-evolution, executors, MLflow and resume on a user's loop."""
    from engine_helpers import outcome

    from evo.config import Config
    from evo.run import main

    kw = dict(objective="objective_helpers:objective", bootstrap=4, males=4, females=12, offspring=3,
              promote=1, promote_random=1, pred_steps=2, progress=False,
              tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    a = main(Config(gens=2, workers=0, out=str(tmp_path / "a"), **kw))
    main(Config(gens=1, workers=2, out=str(tmp_path / "b"), **kw))
    b = main(Config(gens=2, workers=2, out=str(tmp_path / "b"), resume=True, **kw))
    assert outcome(a, tmp_path / "a") == outcome(b, tmp_path / "b")  # workers and resume change nothing
    best = a["best"]
    g = best["genes"]
    floor = (g["x"] - 0.3) ** 2 + 0.01 * abs(g["n"] - 3) + 0.1 * abs(math.log10(g["lr"]) + 2)
    assert g["mode"] in ("ok", "ok2") and best["best_val_loss"] == pytest.approx(floor + 1 / 30)
    assert best["best_val_step"] == 30
    c = a["compute"]  # charged in steps: a full training 30 (27 when it continues an early one of 3)
    assert c["full_trainings"] >= 4 and c["early_trainings"] >= 6
    assert 27 * c["full_trainings"] <= c["flops"] <= 30 * c["full_trainings"] + 3 * c["early_trainings"]
    from evo.run import format_summary
    text = format_summary(a)  # the summary speaks of the user's objective, in its units
    assert f"search on {a['preset']} (seed 0)" in text and a["preset"].startswith("objective:")
    assert f"compute: {c['flops']:.3g} training steps" in text and "FLOPs" not in text
    assert "inference not measured (a user objective)" in text
    assert "the space's baseline configuration, same budget: best val loss 1.0000" in format_summary(
        {**a, "baseline_best_val_loss": 1.0})
    assert "params)" not in text and "table lookup" not in text
    # the objective's model: the best's pickled state, as an artifact of the search's run
    import pickle

    from mlflow.tracking import MlflowClient
    where = a["mlflow"]["state_artifact"]
    assert where.startswith("best_state/") and f"best state (the objective's own model) {where}" in text
    local = MlflowClient(kw["tracking_uri"]).download_artifacts(a["mlflow"]["run_id"], where, str(tmp_path / "dl"))
    saved = pickle.load(open(local, "rb"))
    assert saved["state"] == 30 and saved["points"][-1] == (30, pytest.approx(best["best_val_loss"]))


def test_evo_run_refuses_a_bad_objective():
    from evo.config import Config

    with pytest.raises(ValueError, match="objective_helpers:nothing"):
        Config(objective="objective_helpers:nothing")
    with pytest.raises(ValueError, match="--objective or --table"):
        Config(objective="objective_helpers:objective", table="benchmarks/tables/tiny")
    with pytest.raises(ValueError, match="--arch-features"):
        Config(objective="objective_helpers:objective", arch_features=True)


@pytest.mark.parametrize("make, word", [
    (lambda: Objective(h.fn, {"x": LogFloat(0, 1)}, full_steps=10), "x=LogFloat"),
    (lambda: Objective(h.fn, {"x": Int(5, 1)}, full_steps=10), "x=Int"),
    (lambda: Objective(h.fn, {"x": Choice()}, full_steps=10), "Choice needs"),
    (lambda: Objective(h.fn, {"x": (0, 1)}, full_steps=10), "x=\\(0, 1\\)"),
    (lambda: Objective(h.fn, h.SPACE, full_steps=1), "full_steps"),
    (lambda: load_objective("no_colon"), "no_colon"),
    (lambda: search(h.objective, budget=0), "budget"),
])
def test_bad_input_is_named(make, word):
    with pytest.raises(ValueError, match=word):
        make()


def test_python_m_evo_objective_runs_a_users_objective():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests")])}
    out = subprocess.run([sys.executable, "-m", "evo.objective", "--objective", "objective_helpers:objective",
                          "--budget", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].startswith("best loss ")


def test_evo_run_warm_starts_a_users_objective_from_earlier_searches(tmp_path):
    """--warm-start mlflow with --objective: the females start from every fully trained evaluation
    of an earlier search of the same objective at the same budgets, once per architecture."""
    import json

    from evo.checkpoint import read_snapshot
    from evo.config import Config
    from evo.run import main

    kw = dict(objective="objective_helpers:objective", bootstrap=4, males=4, females=12, offspring=3,
              promote=1, promote_random=1, pred_steps=2, progress=False, workers=0,
              tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="warm")
    main(Config(gens=2, out=str(tmp_path / "a"), **kw))
    archive = read_snapshot(tmp_path / "a")["archive"]
    main(Config(gens=1, out=str(tmp_path / "b"), warm_start="mlflow", **kw))
    events = [json.loads(ln) for ln in (tmp_path / "b" / "journal.jsonl").read_text().splitlines()]
    warm = next(e["value"] for e in events if e["id"] == "warm")
    assert len(archive) >= 4 and len(warm) == len({json.dumps(r["genes"], sort_keys=True) for r in archive})
    assert all(k.startswith("warm:mlflow:") for k in warm)
    with pytest.raises(ValueError, match="warm"):  # another objective's searches are not its curves
        main(Config(gens=1, out=str(tmp_path / "c"), warm_start="mlflow",
                    **{**kw, "objective": "examples.digits:objective"}))


def test_the_optuna_route_logs_each_trial_to_mlflow(tmp_path):
    """search(..., tracking_uri): the study a parent run, each finished trial a child with its
    config, every reported point and its cost; a search started again logs under the same parent
    and never logs a trial twice."""
    from mlflow.tracking import MlflowClient

    uri, url = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 's.db'}"
    study = search(h.objective, budget=3, seed=2, storage=url, study_name="logged", tracking_uri=uri)
    study = search(h.objective, budget=5, seed=2, storage=url, study_name="logged", tracking_uri=uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("dimorph-optuna")
    parent = client.get_run(study.user_attrs["mlflow_run_id"])
    assert parent.info.run_name == "logged" and parent.data.tags["dimorph.route"] == "optuna"
    kids = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                              max_results=1000)
    by_number = {int(k.data.tags["optuna.trial_number"]): k for k in kids}
    assert len(kids) == len(by_number) == len(study.trials)  # each trial once, across the two searches
    for t in study.trials:
        k = by_number[t.number]
        assert k.data.tags["optuna.state"] == t.state.name
        assert k.data.params == {n: str(v) for n, v in t.params.items()}
        hist = client.get_metric_history(k.info.run_id, "val/loss")
        finite = {s: v for s, v in t.intermediate_values.items() if math.isfinite(v)}
        assert {m.step: m.value for m in hist if math.isfinite(m.value)} == pytest.approx(finite)
        cost = 30 if t.state == TrialState.COMPLETE else (t.last_step or 0)
        assert k.data.metrics["cost/steps"] == cost
        if t.state == TrialState.COMPLETE:
            assert k.data.metrics["final/value"] == pytest.approx(t.value)
        if t.state == TrialState.FAIL:
            assert "crashes" in k.data.tags["dimorph.error"]
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith(f"**Best value {study.best_value:.6g}: trial {study.best_trial.number} (")
    assert f"{len(study.trials)} trials (" in note and f"{spent_steps(study)} training steps" in note
    best = client.get_metric_history(parent.info.run_id, "search/best_value")
    assert best[-1].value == pytest.approx(study.best_value)
    steps = client.get_metric_history(parent.info.run_id, "search/training_steps")
    assert max(m.value for m in steps) == spent_steps(study)
