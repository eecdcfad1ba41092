"""Peer methods on a tiny budget: budget respected, deterministic, ASHA pays only for what it trains."""
import json
import math

import numpy as np
import pytest

from evo.config import Config
from evo.executors import SerialExecutor
from evo.peers import PEERS, PeerSearch, missing, run_peer
from evo.tracking import Tracker

STEPS = 30  # early budget 6 steps; ASHA rungs 6, 18, 30
BASELINE_FLOPS = 6.8e9  # a budget unit: about 2.4 thirty-step trainings of the tiny baseline (2.85e9 each)


def peer_config(tmp, data, name, **kw) -> Config:
    args = dict(mode="baseline", preset="tiny", full_steps=STEPS, early_frac=0.2, seed=0,
                budget_flops=4 * BASELINE_FLOPS, data=str(data), out=str(tmp / name),
                tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", inference_samples=1, inference_tokens=8,
                progress=False, **kw)
    return Config(**args)


def reference_losses(path) -> tuple[float, float]:
    """(bigram, uniform) cross-entropies on the corpus's validation tokens: an add-one bigram model
    counted on the tiny preset's training tokens, and the uniform guess ln(vocab)."""
    from models.data import load_dataset
    from models.presets import get_preset

    ds = load_dataset(str(path))
    V = ds.vocab_size
    train = ds.train[:get_preset("tiny").train_tokens].astype(np.int64)
    val = ds.val.astype(np.int64)
    keys, counts = np.unique(train[:-1] * V + train[1:], return_counts=True)
    pairs = val[:-1] * V + val[1:]
    i = np.minimum(np.searchsorted(keys, pairs), len(keys) - 1)
    seen = np.where(keys[i] == pairs, counts[i], 0)
    p = (seen + 1) / (np.bincount(train[:-1], minlength=V)[val[:-1]] + V)
    return float(-np.log(p).mean()), math.log(V)


def run(tmp, data, method, name=None, **kw):
    cfg = peer_config(tmp, data, name or method, **kw)
    return run_peer(cfg, method, Tracker(cfg.tracking_uri, "peers"), SerialExecutor())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shakespeare_path):
    tmp = tmp_path_factory.mktemp("peers")
    return tmp, {m: run(tmp, shakespeare_path, m) for m in PEERS if not missing(m)}  # dehb: an optional install


@pytest.mark.slow
def test_budget_respected(runs, shakespeare_path):
    _, summaries = runs
    # 30 steps learn something (below the uniform guess) but not more than counting bigrams does
    bigram, uniform = reference_losses(shakespeare_path)
    for method, s in summaries.items():
        hist, budget = s["history"], 4 * BASELINE_FLOPS
        # never past the budget, and it was used: a search stops at the first training that does not fit
        assert 0.5 * budget < s["compute"]["flops"] <= budget, method
        assert s["compute"]["flops"] == pytest.approx(hist[-1]["flops"])
        assert s["best"]["best_val_loss"] == pytest.approx(min(h["best_val_loss"] for h in hist))
        assert bigram < s["best"]["best_val_loss"] < uniform, (method, bigram, uniform)
        assert s["best"]["inference_tokens_per_s"] > 0 and s["best"]["train_time_s"] > 0


@pytest.mark.slow
def test_same_seed_same_result(runs, shakespeare_path):
    tmp, summaries = runs
    for method in ("asha", "evolution"):
        again = run(tmp, shakespeare_path, method, name=method + "-again")
        a, b = summaries[method], again
        assert [h["best_val_loss"] for h in a["history"]] == [h["best_val_loss"] for h in b["history"]]
        assert a["best"]["genes"] == b["best"]["genes"] and a["compute"]["flops"] == b["compute"]["flops"]


def test_asha_continues_from_states(runs):
    tmp, summaries = runs
    snap = json.loads((tmp / "asha" / "checkpoint.json").read_text())
    journal = [json.loads(line) for line in (tmp / "asha" / "journal.jsonl").read_text().splitlines()]
    evals = {e["id"][5:]: e["value"] for e in journal if e["id"].startswith("eval/")}
    # (warmup 60 > 30 steps fails at once: such a trial costs nothing and is left out here)
    recs = [r for r in snap["records"] if not evals[f"{r['key']}/s6"].get("error")]
    pruned = [r for r in recs if r["role"].startswith("pruned")]
    full = [r for r in recs if r["steps"] == STEPS]
    assert pruned and full  # some trials stopped at a rung, some reached the full budget
    for r in pruned:
        assert r["steps"] in (6, 18) and f"{r['key']}/s{STEPS}" not in evals
    # a promoted trial's later rung extends its earlier one: same first steps, flops counted once
    total = 0.0
    for r in recs:
        segs = sorted((v for k, v in evals.items() if k.split("/")[0] == r["key"]), key=lambda v: v["steps"])
        for a, b in zip(segs, segs[1:]):
            assert b["train_losses"][: a["steps"]] == a["train_losses"]
            assert b["flops"] > a["flops"]
        per_step = segs[-1]["flops"] / segs[-1]["steps"]
        assert segs[-1]["flops"] == pytest.approx(per_step * r["steps"])
        total += segs[-1]["flops"]
    assert total == pytest.approx(summaries["asha"]["compute"]["flops"])
    cheap = [evals[f"{r['key']}/s{r['steps']}"]["flops"] for r in pruned]
    dear = [evals[f"{r['key']}/s{STEPS}"]["flops"] for r in full]
    assert min(cheap) < min(dear) and sum(cheap) / len(cheap) < sum(dear) / len(dear)


def test_resume_replays_without_training(runs, shakespeare_path):
    tmp, summaries = runs
    calls = []

    class Counting(SerialExecutor):
        def run(self, tasks):
            calls.extend(tasks)
            return super().run(tasks)

    cfg = peer_config(tmp, shakespeare_path, "random")
    again = run_peer(cfg, "random", Tracker(cfg.tracking_uri, "peers"), Counting())
    assert calls == [] and again == summaries["random"]


def test_bad_method(tmp_path, shakespeare_path):
    with pytest.raises(ValueError, match="'bogus'"):
        PeerSearch(peer_config(tmp_path, shakespeare_path, "x"), "bogus", SerialExecutor(), None)


@pytest.mark.slow
def test_interrupted_asha_resumes_without_retraining(runs, shakespeare_path):
    tmp, summaries = runs
    calls = []

    class Stopping(SerialExecutor):
        def run(self, tasks):
            if len(calls) == 4:
                raise KeyboardInterrupt
            calls.extend(tasks)
            return super().run(tasks)

    cfg = peer_config(tmp, shakespeare_path, "asha-killed")
    with pytest.raises(KeyboardInterrupt):
        run_peer(cfg, "asha", Tracker(cfg.tracking_uri, "peers"), Stopping())
    before, again = len(calls), []

    class Counting(SerialExecutor):
        def run(self, tasks):
            again.extend(tasks)
            return super().run(tasks)

    resumed = run_peer(cfg, "asha", Tracker(cfg.tracking_uri, "peers"), Counting())
    full = summaries["asha"]
    assert len(again) == full["compute"]["trainings"] - 4  # the 4 journaled trainings are replayed
    assert before == 4 and resumed["history"] == full["history"] and resumed["best"]["genes"] == full["best"]["genes"]
    assert resumed["compute"]["trainings"] == full["compute"]["trainings"]


def test_asha_child_run_logs_each_step_once(runs, shakespeare_path):
    from mlflow.tracking import MlflowClient

    from evo.space import search_preset

    tmp, summaries = runs
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    parent = client.get_run(summaries["asha"]["mlflow"]["run_id"])
    assert parent.data.tags["dimorph.mode"] == "asha"
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(kids) == len({k.data.tags["dimorph.eval_key"] for k in kids})  # one child per trial
    full = [k for k in kids if k.data.tags["dimorph.steps"] == str(STEPS)]
    pruned = [k for k in kids if k.data.tags["dimorph.role"].startswith("pruned")]
    assert full and pruned
    one = full[-1].info.run_id  # trained in three rungs, continued from saved states
    assert [m.step for m in client.get_metric_history(one, "train/loss")] == list(range(1, STEPS + 1))
    # validation after step 0, at the preset's own eval steps, and at the end of each rung
    preset = search_preset(peer_config(tmp, shakespeare_path, "asha"))
    _, train_cfg = preset.configs(preset.baseline, 2)
    evals = {0, 6, 18, STEPS} | {s for s in range(1, STEPS + 1) if train_cfg.evaluates_at(s)}
    assert [m.step for m in client.get_metric_history(one, "val/loss")] == sorted(evals)


def test_tpe_hyperband_prunes_at_its_brackets_rungs_within_the_budget(tmp_path):
    from evo.table import load_table
    from evo.tablestats import run_method
    from tests.table_helpers import make_table

    d = str(make_table(tmp_path / "t", n=60))
    t = load_table(d)
    r = run_method(d, "hyperband", 0, 30 * t.mean_full_cost(), state=True)
    recs = r["state"]["records"]
    roles = {x["role"] for x in recs}
    assert {"pruned@10", "pruned@30"} <= roles  # the rungs E * 3^k of the brackets below the full budget
    assert r["compute"]["flops"] <= 30 * t.mean_full_cost() * (1 + 1e-12)
    full = [x for x in recs if x["steps"] == t.full_steps]
    assert full and r["history"][-1]["best"] == min(x["target"] for x in full)
    asha = run_method(d, "asha", 0, 30 * t.mean_full_cost(), state=True)
    assert [x["genes"] for x in recs] != [x["genes"] for x in asha["state"]["records"]]  # another schedule
