"""The GPT of models/ as a built-in objective of evo.objective (evo.gpt_objective)."""
import math

import pytest

from engine_helpers import fast_config, outcome


def test_evo_run_on_the_gpt_objective_is_the_preset_search(tmp_path, shakespeare_path):
    """`--objective evo.gpt_objective:tiny` makes every decision, charge and report of `--preset tiny`."""
    from evo.run import main

    kw = dict(gens=1, start="bracket")  # the default start (the helper's is the full one)
    a = main(fast_config(tmp_path / "a", shakespeare_path, **kw))
    b = main(fast_config(tmp_path / "b", shakespeare_path, objective="evo.gpt_objective:tiny", **kw))
    assert outcome(a, tmp_path / "a" / "out") == outcome(b, tmp_path / "b" / "out")
    assert a["compute"]["flops"] == b["compute"]["flops"] > 0  # FLOPs, not steps, for both
    # generation 0 is the bracket: 3 x 4 early-trained, the best 2 (ceil(4 / 3)), the baseline and 1
    # at random fully trained; generation 1: 3 children early-trained, 1 + 1 promoted (fewer when the baseline is among the best)
    assert a["compute"]["full_trainings"] == b["compute"]["full_trainings"] <= 4 + 2
    assert a["compute"]["early_trainings"] == b["compute"]["early_trainings"] == 12 + 3
    assert b["preset"] == "tiny" and "cost_unit" not in b  # reported as the GPT, not a user objective
    assert b["best"]["n_params"] == a["best"]["n_params"] > 0
    for s in (a, b):  # the model is measured and logged in both
        assert s["best"]["inference_tokens_per_s"] > 0 and s["mlflow"].get("model_uri")


def test_the_gpt_objective_trains_in_rungs_as_in_one_call(shakespeare_path, one_thread):
    """fn(config, 12) then fn(config, 24, state) reports what fn(config, 24) does, exactly, plus
    the loss at step 12 (a call ends with an evaluation: the point a pruner judges)."""
    from evo.gpt_objective import gpt

    obj = gpt("tiny", full_steps=24, early_frac=0.25, data=str(shakespeare_path))
    config = dict(obj.baseline)
    first, state = obj.fn(config, 12, None, seed=3)
    rest, state = obj.fn(config, 24, state, seed=3)
    whole, _ = obj.fn(config, 24, None, seed=3)
    assert first and rest and all(s <= 12 for s, _ in first) and all(12 < s <= 24 for s, _ in rest)
    rungs = dict(first + rest)
    assert rungs.pop(12) > 0 and rungs == dict(whole) and state.step == 24
    vocab = len(set(shakespeare_path.read_text()))
    assert all(0 < v < math.log(vocab) + 1 for _, v in whole)  # near ln(vocab) after 24 steps at most
    other, _ = obj.fn(config, 12, None, seed=4)
    assert other != first  # the seed reaches the initialisation and the batches


def test_the_gpt_objective_through_optuna(shakespeare_path, one_thread):
    """The GPT through the Optuna route: trials are pruned or complete, each value a reported loss."""
    from optuna.trial import TrialState

    from evo.objective import search, spent_steps
    from evo.gpt_objective import gpt

    obj = gpt("tiny", full_steps=20, early_frac=0.25, data=str(shakespeare_path))
    study = search(obj, budget=None, n_trials=4, seed=0)
    states = [t.state for t in study.trials]
    assert len(states) == 4 and TrialState.FAIL not in states and TrialState.COMPLETE in states
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            assert t.value == min(t.intermediate_values.values()) and max(t.intermediate_values) == 20
    assert spent_steps(study) == sum(20 if t.state == TrialState.COMPLETE else t.last_step for t in study.trials)


def test_every_preset_is_an_objective():
    from evo.objective import load_objective
    from models.presets import PRESETS

    for name, p in PRESETS.items():
        obj = load_objective(f"evo.gpt_objective:{name}")
        assert obj.preset is p and obj.full_steps == p.full_steps and obj.baseline == p.baseline
        assert set(obj.space) == set(p.gene_names) and obj.cost_unit == "FLOPs" and obj.logs_model
    with pytest.raises(ValueError, match="no attribute 'huge'"):
        load_objective("evo.gpt_objective:huge")
