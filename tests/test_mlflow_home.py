"""What a user finds in MLflow after a search: the experiment's kind and leaderboard view, the parent's
final result, lineage by run id, unique names, curves as CSV, cost-stepped progress, the best model
(loadable with mlflow.pytorch) and `evo.sample`."""
import hashlib
import json
import math

import pytest
from mlflow.tracking import MlflowClient

from engine_helpers import fast_config
from evo.run import format_summary, main
from evo.tracking.writer import MODEL_METRICS
from evo.tracking import (BY_COST, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, LEADERBOARD_FILTER, LEADERBOARD_ORDER,
                          LEADERBOARD_VIEW)

E, F = 6, 30  # fast_config's budgets: 20% of 30 steps


@pytest.fixture(scope="module")
def search(tmp_path_factory, shakespeare_path):
    """A finished 1-generation combined search (inference timed 3 times each way), then a baseline
    search in the same store."""
    tmp = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIMORPH_CACHE", str(tmp / "cache"))
        cfg = fast_config(tmp, shakespeare_path, gens=1, inference_samples=3)
        summary = main(cfg)
        other = main(fast_config(tmp, shakespeare_path, gens=1, mode="baseline", out=str(tmp / "base")))
    client = MlflowClient(cfg.tracking_uri)
    return cfg, summary, other, client


def history(client, run_id, key):
    """(step, value) of a metric's points, by step."""
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def runs_of(client, parent_id):
    parent = client.get_run(parent_id)
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                              max_results=1000)
    return parent, kids


@pytest.mark.slow
def test_the_experiment_opens_on_runs_and_has_a_leaderboard_view(search):
    cfg, summary, _, client = search
    exp = client.get_experiment(summary["mlflow"]["experiment_id"])
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    view = json.loads(exp.tags[f"mlflow.sharedViewState.{LEADERBOARD_VIEW}"])
    state = json.loads(view["state"])
    assert view["name"] == "Dimorph leaderboard" and isinstance(view["createdAt"], int)
    assert state["searchFilter"] == LEADERBOARD_FILTER and state["orderByKey"] == LEADERBOARD_ORDER
    assert state["orderByAsc"] is True and LEADERBOARD_ORDER in state["selectedColumns"]
    # the view's filter and order are valid MLflow search syntax: children only, best first
    board = client.search_runs([exp.experiment_id], LEADERBOARD_FILTER, order_by=[f"{LEADERBOARD_ORDER} ASC"],
                               max_results=1000)
    assert len(board) == 4 + 3 + 1 and {r.data.tags["dimorph.kind"] for r in board} == {"evaluation"}
    losses = [r.data.metrics["arch/best_val_loss"] for r in board if "arch/best_val_loss" in r.data.metrics]
    assert len(losses) == 4 + 2 + 1 and losses == sorted(losses)
    assert "workflowType=machine_learning" in format_summary(summary)


def test_the_parent_carries_the_final_result(search, shakespeare_path):
    cfg, summary, _, client = search
    parent, kids = runs_of(client, summary["mlflow"]["run_id"])
    m, tags, b, p = parent.data.metrics, parent.data.tags, summary["best"], summary["predictor"]
    assert m["final/best_val_loss"] == b["best_val_loss"] == min(
        k.data.metrics["arch/best_val_loss"] for k in kids if "arch/best_val_loss" in k.data.metrics)
    assert m["final/predictor_holdout_tau"] == p["holdout_kendall_tau"]
    assert m["final/predictor_fit_tau"] == p["fit_kendall_tau"]
    assert m["final/flops"] == summary["compute"]["flops"] > 0
    assert m["final/full_trainings"] == 6 and m["final/early_trainings"] == 7
    assert tags["dimorph.best_formula"] == p["sympy"] and tags["dimorph.best_formula_tree"] == p["tree"]
    best = client.get_run(tags["dimorph.best_run_id"])  # the best child, a real run of this search
    assert best.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert best.data.tags["dimorph.eval_key"] == tags["dimorph.best_key"] == b["key"]
    assert best.data.metrics["arch/best_val_loss"] == m["final/best_val_loss"]
    assert json.loads(tags["dimorph.best_genes"]) == b["genes"]
    note = tags["mlflow.note.content"]
    assert b["key"] in note and p["sympy"] in note and "held out" in note and "evo.sample" in note
    # the margin over the baseline (g0-b0, trained to the same budget), as metrics and in words
    base = next(k for k in kids if k.data.tags["dimorph.eval_key"] == "g0-b0").data.metrics["arch/best_val_loss"]
    assert m["final/baseline_best_val_loss"] == base == summary["baseline_best_val_loss"]
    margin = base - m["final/best_val_loss"]
    assert m["final/margin_vs_baseline"] == pytest.approx(margin, abs=1e-12) and margin >= 0
    assert m["final/margin_vs_baseline_pct"] == pytest.approx(100 * margin / base, abs=1e-9)
    words = (f"the best is {margin:.4f} ({100 * margin / base:.1f}%) better than the baseline" if round(margin, 4)
             else "the best is no better than the baseline")
    said = f"best val loss {base:.4f}; {words}"
    assert said in note and said in format_summary(summary)
    # the held-out tau with its n: the archive's held-out part (here too small for an interval)
    from primitives.fitness import holdout_mask
    archive = [k.data.tags["dimorph.eval_key"] for k in kids if "arch/best_val_loss" in k.data.metrics]
    n = int(holdout_mask(archive).sum())
    assert p["holdout_n"] == n == m["final/predictor_holdout_n"] and 2 <= n < 5 and p["holdout_ci"] is None
    assert f"**{p['holdout_kendall_tau']:.3f} held out (n={n}: too few for an interval)**" in note
    # the inference speeds: the mean of 3 timed samples each way, with their spread
    for way in ("inference_tokens_per_s", "inference_tokens_per_s_no_cache"):
        lo, mean, hi, sd = (b[f"{way}{x}"] for x in ("_min", "", "_max", "_std"))
        assert b["inference_samples"] == 3 and lo <= mean <= hi and 0 <= sd <= hi - lo
        assert m[f"final/{way}"] == mean and m[f"final/{way}_std"] == sd
    speeds = (f"inference {b['inference_tokens_per_s']:.0f} ± {b['inference_tokens_per_s_std']:.0f} tok/s with KV "
              f"cache, {b['inference_tokens_per_s_no_cache']:.0f} ± {b['inference_tokens_per_s_no_cache_std']:.0f} "
              f"without (mean ± std of 3 samples")
    assert speeds in note and speeds in format_summary(summary)
    # the dataset: the resolved path as the `data` param, and an input with its sha256
    sha = hashlib.sha256(shakespeare_path.read_bytes()).hexdigest()
    assert parent.data.params["data"] == str(shakespeare_path.resolve())
    [ds] = parent.inputs.dataset_inputs
    assert ds.dataset.digest == sha[:16] and json.loads(ds.dataset.profile)["sha256"] == sha
    assert json.loads(ds.dataset.source)["uri"] == str(shakespeare_path.resolve())
    assert {t.key: t.value for t in ds.tags}["mlflow.data.context"] == "training"


def test_parent_and_child_metric_names_are_disjoint(search):
    cfg, summary, _, client = search
    parent, kids = runs_of(client, summary["mlflow"]["run_id"])
    child_names = set().union(*(k.data.metrics for k in kids))
    assert {"arch/best_val_loss", "cost/flops", "train/loss", "val/loss"} <= child_names
    assert {"search/best_val_loss", "search/flops", BY_COST, "final/best_val_loss"} <= set(parent.data.metrics)
    assert not set(parent.data.metrics) & child_names
    assert all(k.startswith(("search/", "final/")) for k in parent.data.metrics)


def test_lineage_tags_hold_run_ids_and_run_names_are_unique(search):
    cfg, summary, other, client = search
    parent, kids = runs_of(client, summary["mlflow"]["run_id"])
    by_key = {k.data.tags["dimorph.eval_key"]: k.info.run_id for k in kids}
    children = [k for k in kids if k.data.tags.get("dimorph.parent_keys")]
    assert len(children) == 3  # generation 1's, each with two parents
    for k in children:
        keys = k.data.tags["dimorph.parent_keys"].split(",")
        ids = k.data.tags["dimorph.parents"].split(",")
        assert len(keys) == 2 and ids == [by_key[x] for x in keys]
        assert all(client.get_run(i).data.tags["mlflow.parentRunId"] == parent.info.run_id for i in ids)
    short = parent.info.run_id[:6]
    assert parent.info.run_name == f"combined-tiny-seed0-{short}"
    assert sorted(k.info.run_name for k in kids) == sorted(f"{short}-{key}" for key in by_key)
    base, base_kids = runs_of(client, other["mlflow"]["run_id"])
    names = [r.info.run_name for r in [parent, *kids, base, *base_kids]]
    assert len(names) == len(set(names)) == 1 + 7 + 1 + 1  # unique across the two searches too


def test_each_child_keeps_its_curves_as_csv_matching_its_metrics(search, tmp_path):
    from evo.predict import main as predict_main
    from evo.predict import read_curves

    cfg, summary, _, client = search
    _, kids = runs_of(client, summary["mlflow"]["run_id"])
    lengths = set()
    for k in kids:
        path = client.download_artifacts(k.info.run_id, "curves.csv", str(tmp_path))
        key = k.data.tags["dimorph.eval_key"]
        full = "arch/best_val_loss" in k.data.metrics
        curves = read_curves(path, F if full else E)  # every point up to the step the run reached
        assert list(curves) == [key]
        for split, metric in (("train", "train/loss"), ("val", "val/loss")):
            assert history(client, k.info.run_id, metric) == sorted(zip(*curves[key][split]))
        lengths.add((full, len(curves[key]["train"][0])))
        assert predict_main(["--curves", path, "--early-steps", str(E), "--full-steps", str(F),
                             "--predictor", "last-loss"]) == 0
    assert lengths == {(True, F), (False, E)}  # a continuation rewrote its early phase's file whole


def test_scalars_are_logged_once_per_phase_and_progress_against_cost(search):
    cfg, summary, _, client = search
    parent, kids = runs_of(client, summary["mlflow"]["run_id"])
    for k in kids:
        full = "arch/best_val_loss" in k.data.metrics
        for name in ("cost/flops", "cost/seconds", "arch/n_params"):
            assert [s for s, _ in history(client, k.info.run_id, name)] == ([E, F] if full else [E])
        if "pred/predicted_final" in k.data.metrics:  # judged after its early phase: stepped there
            assert [s for s, _ in history(client, k.info.run_id, "pred/predicted_final")] == [E]
    gens = history(client, parent.info.run_id, "search/flops")
    prog = history(client, parent.info.run_id, BY_COST)
    assert BY_COST == "search/best_val_loss_by_gflops" and parent.data.tags["dimorph.cost_step"] == "1e9 training FLOPs"
    assert prog[-1][0] == round(gens[-1][1] / 1e9) and len(prog) > len(gens)  # a point per evaluation
    assert all(a[0] < b[0] and a[1] >= b[1] for a, b in zip(prog, prog[1:]))
    assert prog[-1][1] == parent.data.metrics["final/best_val_loss"] == history(
        client, parent.info.run_id, "search/best_val_loss")[-1][1]


def test_the_logged_model_loads_and_reproduces_the_val_loss(search):
    import dataclasses

    import mlflow
    import mlflow.pytorch
    import torch

    from evo.space import search_preset
    from evo.evaluate import token_data
    from models.data import load_dataset
    from models.train import EVAL_BATCH

    cfg, summary, _, client = search
    run_id = summary["mlflow"]["run_id"]
    parent = client.get_run(run_id)
    assert parent.data.tags["dimorph.model_uri"] == summary["mlflow"]["model_uri"]
    name = "dimorph-combined-tiny-seed0"  # named after its search
    logged = client.get_logged_model(summary["mlflow"]["model_uri"].removeprefix("models:/"))
    assert logged.tags["mlflow.note.content"].startswith(f"The best architecture of the Dimorph search `{parent.info.run_name}`")
    shown = {m.key: m for m in logged.metrics if m.dataset_name}  # the final ones name the dataset
    assert shown["final/best_val_loss"].value == parent.data.metrics["final/best_val_loss"]
    assert set(shown) == set(MODEL_METRICS)
    ds = parent.inputs.dataset_inputs[0].dataset
    assert {(m.dataset_name, m.dataset_digest) for m in shown.values()} == {(ds.name, ds.digest)}
    assert parent.data.tags["dimorph.model_name"] == summary["mlflow"]["model_name"] == name
    [logged] = client.search_logged_models([parent.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    assert logged.name == name and f"models:/{logged.model_id}" == summary["mlflow"]["model_uri"]
    old = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(cfg.tracking_uri)
    try:
        model = mlflow.pytorch.load_model(f"runs:/{run_id}/{name}", map_location="cpu")
        info = mlflow.models.get_model_info(summary["mlflow"]["model_uri"])
    finally:
        mlflow.set_tracking_uri(old)
    best = client.get_run(parent.data.tags["dimorph.best_run_id"])
    preset = search_preset(cfg)
    data = token_data(cfg.data, preset)
    gpt_cfg, _ = preset.configs(summary["best"]["genes"], data.vocab_size)
    # the bundled code's classes (dimorph_models.gpt), not Dimorph's models.gpt: equal fields
    assert type(model).__module__ == "dimorph_models.gpt" and type(model.config).__name__ == "GPTConfig"
    assert dataclasses.asdict(model.config) == dataclasses.asdict(gpt_cfg) and not model.training
    assert info.metadata["vocab"] == load_dataset(cfg.data).chars
    assert info.metadata["gpt_config"] == {k: getattr(gpt_cfg, k) for k in info.metadata["gpt_config"]}
    assert info.metadata["key"] == summary["best"]["key"] and info.metadata["steps"] == F
    total = 0.0  # the validation loss as the trainer computes it: batches of windows, weighted by size
    with torch.no_grad():
        for i in range(0, len(data.val_x), EVAL_BATCH):
            x, y = data.val_x[i:i + EVAL_BATCH], data.val_y[i:i + EVAL_BATCH]
            total += model(x, y)[1].item() * len(x)
    # the last evaluation of that architecture's training: the state the model was made from
    step, final_val = history(client, best.info.run_id, "val/loss")[-1]
    assert step == F and abs(total / len(data.val_x) - final_val) < 1e-5


def test_the_model_loads_where_a_models_package_of_the_users_would_shadow_dimorphs(search, tmp_path):
    """The model's code is bundled as `dimorph_models`: a process whose own `models` package comes
    first on its path loads the model (the bundle has no `models` package) and generates with it."""
    import os
    import subprocess
    import sys

    cfg, summary, _, _ = search
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("MINE = True\n")
    code = (
        "import os, mlflow, mlflow.pytorch, torch\n"
        "import models; assert models.MINE\n"
        f"mlflow.set_tracking_uri({cfg.tracking_uri!r})\n"
        f"uri = {summary['mlflow']['model_uri']!r}\n"
        "local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path='got')\n"
        "print(sorted(os.listdir(os.path.join(local, 'code'))))\n"
        "m = mlflow.pytorch.load_model(local, map_location='cpu')\n"
        "y = m.generate(torch.zeros((1, 1), dtype=torch.long), 7, generator=torch.Generator().manual_seed(0))\n"
        "print(type(m).__module__, type(m).__name__, tuple(y.shape))\n")
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-2:] == ["['dimorph_models']", "dimorph_models.gpt GPT (1, 8)"]


def test_evo_sample_prints_the_samples_deterministically(search, capsys, shakespeare_path):
    from evo.sample import main as sample_main

    cfg, summary, _, client = search
    # a prompt from the corpus's own characters (whichever corpus the tests found), with an escape
    text = shakespeare_path.read_text(encoding="utf-8")
    head = text.strip()[:2]
    start, prompt = (r"\n" + head, "\n" + head) if "\n" in text else (head, head)
    args = ["--run-id", summary["mlflow"]["run_id"], "--tracking-uri", cfg.tracking_uri,
            "--num-samples", "2", "--max-new-tokens", "25", "--start", start]

    def samples(*extra):
        assert sample_main(args + list(extra)) == 0
        out = capsys.readouterr().out
        parts = out.split("---------------\n")
        assert parts[-1] == ""
        return parts[:-1]

    first = samples("--seed", "3")
    assert len(first) == 2 and all(s.startswith(prompt) and len(s) == len(prompt) + 25 + 1 for s in first)  # + print's newline
    assert samples("--seed", "3") == first
    assert samples("--seed", "4") != first
    assert len(samples("--num-samples", "3")) == 3


def test_evo_sample_explains_what_it_cannot_do(search, capsys):
    from evo.sample import main as sample_main

    cfg, summary, _, client = search
    _, kids = runs_of(client, summary["mlflow"]["run_id"])
    base = ["--tracking-uri", cfg.tracking_uri]
    assert sample_main(["--run-id", kids[0].info.run_id, *base]) == 2
    assert f"has no logged model: it is one evaluation of the search run {summary['mlflow']['run_id']}" in \
        capsys.readouterr().err
    assert sample_main(["--run-id", summary["mlflow"]["run_id"], "--start", "\u00e9", *base]) == 2
    assert "vocabulary lacks: ['\u00e9']" in capsys.readouterr().err
    assert sample_main(["--run-id", summary["mlflow"]["run_id"], "--top-k", "0", *base]) == 2
    assert "--top-k must be >= 1" in capsys.readouterr().err


def test_a_missing_best_state_finishes_the_search_without_a_model(tmp_path, shakespeare_path, capsys, monkeypatch):
    import os

    import evo.report
    from evo.sample import main as sample_main

    real = evo.report.best_numbers

    def and_delete(search, measure=True):
        out = real(search, measure)
        os.remove(search.state()["best"]["state"])
        return out

    monkeypatch.setattr(evo.report, "best_numbers", and_delete)
    cfg = fast_config(tmp_path, shakespeare_path, gens=0, mode="baseline")
    summary = main(cfg)
    out = capsys.readouterr()
    assert "warning: no model logged: the best architecture's trained state" in out.err
    assert "no model logged:" in out.out and "missing" in summary["mlflow"]["model_note"]
    parent = MlflowClient(cfg.tracking_uri).get_run(summary["mlflow"]["run_id"])
    assert parent.info.status == "FINISHED" and "dimorph.model_uri" not in parent.data.tags
    assert "No model logged" in parent.data.tags["mlflow.note.content"]
    assert sample_main(["--run-id", parent.info.run_id, "--tracking-uri", cfg.tracking_uri]) == 2
    assert "has no logged model" in capsys.readouterr().err


def test_a_table_search_logs_no_model_and_a_best_so_far_staircase_by_table_cost(tmp_path, monkeypatch):
    from evo.run import cli
    from evo.table import load_table
    from tests.table_helpers import make_table

    table = make_table(tmp_path / "tab", seed=1)  # a table where the best improves 3 times
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli(["--table", str(table), "--gens", "1", "--start", "full", "--out", str(tmp_path / "out"), "--no-progress",
                "--tracking-uri", uri]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["mlflow"]["model_note"].startswith("a table search")
    client = MlflowClient(uri)
    parent = client.get_run(summary["mlflow"]["run_id"])
    assert "dimorph.model_uri" not in parent.data.tags and not parent.inputs.dataset_inputs
    unit = load_table(str(table)).mean_full_cost() / 100
    assert parent.data.tags["dimorph.cost_step"].startswith("1/100 of the table's mean full-training cost")
    prog = history(client, parent.info.run_id, "search/best_val_loss_by_pct_full_cost")  # the unit in the name
    assert BY_COST not in parent.data.metrics and prog[0][0] > 10
    # the ledger's history (a point after each full training): where the best drops, the metric
    # drops at the same cost, flat from the point before
    hist = json.loads((tmp_path / "out" / "checkpoint.json").read_text())["history"]
    drops, best = [], math.inf
    for h in hist:
        if h["best_val_loss"] < best:
            drops.append((round(h["flops"] / unit), h["best_val_loss"], best))
            best = h["best_val_loss"]
    logged = dict(prog)
    assert len(drops) == 3 and [(s, v) for s, v, _ in drops] == [
        (s, v) for (s, v), (_, before) in zip(prog, [(None, math.inf)] + prog) if v < before]
    for s, v, before in drops[1:]:
        assert logged[s - 1] == before and logged[s] == v
    assert all(a[0] < b[0] and a[1] >= b[1] for a, b in zip(prog, prog[1:]))
    assert prog[-1][1] == parent.data.metrics["final/best_val_loss"]
    assert len(prog) > len(hist)  # a point at every evaluation, early ones too


@pytest.mark.slow
def test_resumed_children_still_name_their_parents_by_run_id(tmp_path, shakespeare_path, monkeypatch):
    import evo.executors

    real = evo.executors.SerialExecutor.run
    seen = []

    def interrupted(self, tasks):
        for res in real(self, tasks):
            seen.append(res["key"])
            if len(seen) == 9:  # generation 0 done (4 early, 4 full), then the first child's early phase
                raise KeyboardInterrupt
            yield res

    monkeypatch.setattr(evo.executors.SerialExecutor, "run", interrupted)
    with pytest.raises(SystemExit):
        main(fast_config(tmp_path, shakespeare_path, gens=1))
    monkeypatch.setattr(evo.executors.SerialExecutor, "run", real)
    summary = main(fast_config(tmp_path, shakespeare_path, gens=1, resume=True))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent, kids = runs_of(client, summary["mlflow"]["run_id"])
    by_key = {k.data.tags["dimorph.eval_key"]: k.info.run_id for k in kids}
    children = [k for k in kids if k.data.tags.get("dimorph.parent_keys")]
    assert len(kids) == 7 and len(children) == 3
    for k in children:  # created after the resume, naming parents created before it
        assert k.data.tags["dimorph.parents"].split(",") == [by_key[x] for x in k.data.tags["dimorph.parent_keys"].split(",")]
    assert len({k.info.run_name for k in kids}) == 7


def test_the_male_child_run_names_the_female_half_of_its_mating(search):
    cfg, summary, other, client = search
    parent, kids = runs_of(client, summary["mlflow"]["run_id"])
    lineage = {r["key"]: r for r in json.loads((cfg.out_dir / "checkpoint.json").read_text())["lineage"]}
    children = {k.data.tags["dimorph.eval_key"]: k.data.tags for k in kids if k.data.tags.get("dimorph.parent_keys")}
    assert sorted(children) == sorted(lineage) == ["g1-c0", "g1-c1", "g1-c2"]
    for key, tags in children.items():
        assert tags["dimorph.female"] == lineage[key]["female"] and tags["dimorph.female_child"] == lineage[key]["female_child"]
        assert lineage[key]["parents"] == tags["dimorph.parent_keys"].split(",")
