"""python -m evo.experiment on a tiny budget: table columns and numbers, MLflow runs, skip on rerun."""
import csv
import json

import pytest
from mlflow.tracking import MlflowClient

from evo.experiment import main, parse_args, parse_seeds


def argv(tmp, data):
    return ["--seeds", "1", "--methods", "baseline,random", "--budget-flops", "1.5e10", "--full-steps", "30",
            "--early-frac", "0.2", "--out", str(tmp / "res"), "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}",
            "--data", str(data), "--inference-samples", "1", "--inference-tokens", "8"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, shakespeare_path):
    tmp = tmp_path_factory.mktemp("experiment")
    return tmp, main(argv(tmp, shakespeare_path))


def test_table_matches_summaries(experiment):
    tmp, out = experiment
    res = tmp / "res"
    rows = list(csv.DictReader(open(res / "table.csv")))
    assert [r["method"] for r in rows] == ["baseline", "random"]
    assert list(rows[0]) == ["method", "seeds"] + [f"{n}_{s}" for n in (
        "final_train_loss", "best_val_loss", "train_time_s", "inference_tokens_per_s", "flops", "full_trainings",
        "best_val_at_budget")
        for s in ("mean", "std")]
    base = json.loads((res / "ckpt" / "baseline-seed0" / "summary.json").read_text())
    rand = json.loads((res / "runs" / "random-seed0.json").read_text())
    for row, best, compute in ((rows[0], base["best"], base["compute"]), (rows[1], rand["best"], rand["compute"])):
        assert row["seeds"] == "1"
        for n in ("final_train_loss", "best_val_loss", "train_time_s", "inference_tokens_per_s"):
            assert float(row[f"{n}_mean"]) == pytest.approx(best[n])
        assert float(row["flops_mean"]) == pytest.approx(compute["flops"])
        assert float(row["full_trainings_mean"]) == compute["full_trainings"]
        assert row["best_val_loss_std"] == "nan"  # one seed: no spread
        assert float(row["best_val_at_budget_mean"]) >= float(row["best_val_loss_mean"])
    assert float(rows[0]["full_trainings_mean"]) == 1.0 and float(rows[1]["full_trainings_mean"]) >= 2
    assert 0.75e10 < float(rows[1]["flops_mean"]) <= 1.5e10  # used the budget, never more
    md = (res / "table.md").read_text()
    assert "| baseline | 1 | " + f"{base['best']['final_train_loss']:.4f}" in md
    for f in ("fig1_train_loss.png", "fig2_val_loss.png", "fig3_best_vs_compute.png"):
        assert (res / f).stat().st_size > 1000
    assert len(rand["curves"]["train_losses"]) == 30 and rand["curves"]["eval_steps"][-1] == 30


def test_mlflow_parent_per_method_seed(experiment):
    tmp, out = experiment
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dimorph-experiment")
    parents = client.search_runs([exp.experiment_id], "tags.`dimorph.kind` = 'search'")
    assert sorted(p.data.tags["dimorph.mode"] for p in parents) == ["baseline", "random"]
    rand = next(p for p in parents if p.data.tags["dimorph.mode"] == "random")
    kids = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{rand.info.run_id}'")
    n = json.loads((tmp / "res" / "runs" / "random-seed0.json").read_text())["compute"]["trainings"]
    assert len(kids) == n  # one child per architecture (those with warmup 60 > 30 steps fail at once)
    assert all(("arch/best_val_loss" in k.data.metrics) == (k.info.status == "FINISHED") for k in kids)
    assert sum(k.info.status == "FINISHED" for k in kids) >= 2


def test_rerun_skips_finished(experiment, shakespeare_path, monkeypatch):
    tmp, out = experiment
    import evo.evaluate

    def no_training(task):
        raise AssertionError(f"retrained {task.key}")

    monkeypatch.setattr(evo.evaluate, "evaluate", no_training)
    again = main(argv(tmp, shakespeare_path))
    assert again["rows"] == out["rows"] or all(
        a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for a, b in zip(again["rows"], out["rows"]) for k in a)


def test_seeds_and_bad_input():
    assert parse_seeds(["3"]) == [0, 1, 2]
    assert parse_seeds(["0,4"]) == [0, 4] and parse_seeds(["2", "5"]) == [2, 5]
    with pytest.raises(ValueError, match="'x'"):
        parse_seeds(["x"])
    with pytest.raises(ValueError, match="bogus"):
        parse_args(["--methods", "random,bogus"])
    with pytest.raises(ValueError, match="-1"):
        parse_args(["--budget-flops", "-1"])
