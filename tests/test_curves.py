"""evo.curves: MLflow runs -> evo.predict CSV files, from a real (table) search and from runs logged
by hand into a temporary sqlite store."""
import csv
import json
from collections import defaultdict

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from evo.curves import main
from evo.predict import main as predict_main
from evo.table import load_table
from tests.table_helpers import make_table


def read_csv(path):
    return list(csv.DictReader(open(path)))


def points(rows):
    """curve_id -> split -> [(step, loss)] in file order."""
    out = defaultdict(lambda: defaultdict(list))
    for r in rows:
        out[r["curve_id"]][r["split"]].append((int(r["step"]), float(r["loss"])))
    return out


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A Dimorph search against a synthetic table, logged to a private sqlite store."""
    import os

    from evo.run import cli

    tmp = tmp_path_factory.mktemp("search")
    table = make_table(tmp / "tab", n=40)
    old = os.getcwd()
    os.chdir(tmp)
    try:
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        assert cli(["--table", str(table), "--gens", "1", "--start", "full", "--out", str(tmp / "out"), "--no-progress",
                    "--tracking-uri", uri]) == 0
    finally:
        os.chdir(old)
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    return {"tmp": tmp, "table": table, "uri": uri, "run_id": summary["mlflow"]["run_id"], "out": tmp / "out"}


def test_search_round_trip(search, tmp_path, capsys):
    from evo.checkpoint import read_snapshot

    out = tmp_path / "csv"
    assert main(["--run-id", search["run_id"], "--tracking-uri", search["uri"], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "--early-steps 10 --full-steps 100" in printed  # the search's budgets
    t = load_table(str(search["table"]))
    snap = read_snapshot(search["out"])
    results = read_csv(search["out"] / "results.csv")
    curves = points(read_csv(out / "curves.csv"))
    assert set(curves) == {r["key"] for r in results}  # one curve per evaluated architecture
    finals = {r["curve_id"]: float(r["final_loss"]) for r in read_csv(out / "finals.csv")}
    archive = {a["key"]: a for a in snap["archive"]}
    assert set(finals) == set(archive) and len(finals) >= 8  # exactly the fully trained children
    for key, a in archive.items():
        i = t.row_of(a["genes"])
        assert finals[key] == pytest.approx(a["target"]) == pytest.approx(t.targets[i])
        for split in ("train", "val"):  # the whole curve, early part and continuation
            steps, losses = t.curves[i][split]
            assert curves[key][split] == [(int(s), pytest.approx(v)) for s, v in zip(steps, losses)]
    for r in results:  # early-only children: cut at the early budget
        if r["key"] not in archive:
            assert max(s for s, _ in curves[r["key"]]["train"]) == 10
    meta = {r["curve_id"]: r for r in read_csv(out / "meta.csv")}
    for key, a in archive.items():
        assert float(meta[key]["lr"]) == pytest.approx(a["genes"]["lr"])
        assert float(meta[key]["n_params"]) == t.n_params[t.row_of(a["genes"])]
    assert predict_main(["--curves", str(out / "curves.csv"), "--finals", str(out / "finals.csv"),
                         "--early-steps", "10", "--full-steps", "100", "--predictor", "last-loss",
                         "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == len(finals)


def test_search_errors(search, tmp_path, capsys):
    assert main(["--run-id", "0" * 32, "--tracking-uri", search["uri"], "--out", str(tmp_path)]) == 2
    assert "is not in" in capsys.readouterr().err
    child = MlflowClient(search["uri"]).search_runs(
        [MlflowClient(search["uri"]).get_run(search["run_id"]).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{search['run_id']}'", max_results=1)[0]
    assert main(["--run-id", child.info.run_id, "--tracking-uri", search["uri"], "--out", str(tmp_path)]) == 2
    assert f"pass its search's run id {search['run_id']}" in capsys.readouterr().err
    assert main(["--run-id", search["run_id"], "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}",
                 "--out", str(tmp_path)]) == 2
    assert "no MLflow database" in capsys.readouterr().err


def test_a_baseline_search_keeps_its_final(tmp_path, monkeypatch, capsys):
    """A baseline search trains its one architecture straight to the full budget (phase `straight`):
    it is fully trained, so its curve comes with its final, as warm-starting reads it too."""
    from evo.run import cli
    from evo.tracking import full_evaluations

    table = make_table(tmp_path / "tab", n=12)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    assert cli(["--table", str(table), "--mode", "baseline", "--gens", "1", "--out", str(tmp_path / "out"),
                "--no-progress", "--tracking-uri", uri]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    run_id = summary["mlflow"]["run_id"]
    capsys.readouterr()
    assert main(["--run-id", run_id, "--tracking-uri", uri, "--out", str(tmp_path / "csv")]) == 0
    assert "1 curve(s) written, 1 with a final" in capsys.readouterr().out
    finals = {r["curve_id"]: float(r["final_loss"]) for r in read_csv(tmp_path / "csv" / "finals.csv")}
    assert finals == {"baseline": pytest.approx(summary["best"]["best_val_loss"])}
    assert [e["key"] for e in full_evaluations(run_id, uri)] == list(finals)  # one definition of fully trained


def log_runs(uri):
    """Four runs of a user's own experiment: metric keys loss / val_loss / best, params n_params, lr."""
    client = MlflowClient(uri)
    exp = client.create_experiment("mine")
    runs = {}
    specs = [("r-a", 3.0, "FINISHED", True), ("r-b", 2.5, "FINISHED", False), ("r-c", 2.8, "RUNNING", True)]
    for name, start, status, with_best in specs:
        run = client.create_run(exp, run_name=name)
        rid = run.info.run_id
        ms = [Metric("loss", start - 0.01 * s, 0, s) for s in range(0, 101, 5)]
        ms += [Metric("val_loss", start + 0.1 - 0.008 * s, 0, s) for s in range(0, 101, 20)]
        ms += [Metric("val_loss", float("nan"), 0, 50)]  # a non-finite point is left out
        if with_best:
            ms.append(Metric("best", start - 0.9, 0, 100))
        client.log_batch(rid, metrics=ms)
        client.log_param(rid, "n_params", "12000")
        client.log_param(rid, "lr", "0.003")
        if status == "FINISHED":
            client.set_terminated(rid)
        runs[name] = rid
    other = client.create_run(exp, run_name="no-loss")  # no train metric: left out
    client.log_metric(other.info.run_id, "accuracy", 0.5, step=1)
    client.set_terminated(other.info.run_id)
    return runs


def test_experiment_round_trip(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mine.db'}"
    runs = log_runs(uri)
    out = tmp_path / "csv"
    args = ["--experiment", "mine", "--train-metric", "loss", "--val-metric", "val_loss",
            "--tracking-uri", uri, "--n-params-key", "n_params", "--lr-key", "lr"]
    assert main(args + ["--final-metric", "best", "--out", str(out)]) == 0
    assert "3 curve(s) written, 1 with a final" in capsys.readouterr().out
    curves = points(read_csv(out / "curves.csv"))
    assert set(curves) == set(runs.values())
    a = curves[runs["r-a"]]
    assert a["train"] == [(s, pytest.approx(3.0 - 0.01 * s)) for s in range(0, 101, 5)]
    assert a["val"] == [(s, pytest.approx(3.1 - 0.008 * s)) for s in (0, 20, 40, 60, 80, 100)]
    # r-b has no "best", r-c is still running: only r-a has a final
    assert read_csv(out / "finals.csv") == [{"curve_id": runs["r-a"], "final_loss": repr(2.1)}]
    assert {r["curve_id"]: (float(r["n_params"]), float(r["lr"])) for r in read_csv(out / "meta.csv")} == {
        rid: (12000.0, 0.003) for rid in runs.values()}
    # without --final-metric: the best val_loss, over steps <= --full-steps of runs that reach it
    assert main(args + ["--full-steps", "100", "--out", str(tmp_path / "b")]) == 0
    finals = {r["curve_id"]: float(r["final_loss"]) for r in read_csv(tmp_path / "b" / "finals.csv")}
    assert finals == {runs["r-a"]: pytest.approx(2.3), runs["r-b"]: pytest.approx(1.8)}
    assert main(args + ["--full-steps", "120", "--out", str(tmp_path / "c")]) == 0
    assert not (tmp_path / "c" / "finals.csv").exists()  # no run reached step 120
    capsys.readouterr()
    assert predict_main(["--curves", str(tmp_path / "b" / "curves.csv"), "--finals",
                         str(tmp_path / "b" / "finals.csv"), "--early-steps", "20", "--full-steps", "100",
                         "--predictor", "last-loss", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kendall_tau"] == 1.0
    assert main(["--experiment", "nope", "--train-metric", "loss", "--tracking-uri", uri,
                 "--out", str(tmp_path / "d")]) == 2
    assert "no experiment named 'nope'" in capsys.readouterr().err
    assert main(["--experiment", "mine", "--tracking-uri", uri, "--out", str(tmp_path / "d")]) == 2
    assert "--experiment needs --train-metric" in capsys.readouterr().err
