"""Tabular benchmarks: the format, lookup semantics, errors, and searches against a small table."""
import json
import math
import shutil

import numpy as np
import pytest

from evo.evaluate import EvalTask
from evo.table import Table, TableError, load_table
from tests.table_helpers import make_table


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory):
    return make_table(tmp_path_factory.mktemp("tab") / "synthetic")


def test_lookup_cuts_the_curves_at_the_task_step(table_dir):
    t = Table(table_dir)
    sp = t.space()
    genes = sp.row_genes[3]
    early = t.evaluate(EvalTask(key="k", genes=genes, preset=None, steps=10, seed=0, phase="early"))
    assert early["steps"] == 10 and early["train_steps"] == list(range(1, 11))
    assert early["eval_steps"] == [0, 5, 10]
    assert early["flops"] == pytest.approx(t.cost_per_step[3] * 10)
    assert early["best_val_loss"] == pytest.approx(min(early["val_losses"]))
    full = t.evaluate(EvalTask(key="k/full", genes=genes, preset=None, steps=100, seed=0, phase="full"))
    vals = t.curves[3]["val"][1]
    assert full["best_val_loss"] == pytest.approx(vals.min()) == pytest.approx(t.targets[3])
    assert full["final_val_loss"] == pytest.approx(vals[-1])
    assert full["final_train_loss"] == pytest.approx(full["train_losses"][-1])  # no train_eval split
    assert full["train_losses"][:10] == early["train_losses"] and not full["diverged"]
    assert t.best_target == pytest.approx(min(t.targets))


def test_a_curve_that_ends_early_is_a_divergence(table_dir, tmp_path):
    d = tmp_path / "t"
    shutil.copytree(table_dir, d)
    lines = (d / "curves.csv").read_text().splitlines()
    keep = [ln for ln in lines if not (ln.startswith("x0,") and int(ln.split(",")[1]) > 50)]
    (d / "curves.csv").write_text("\n".join(keep) + "\n")
    t = Table(d)
    genes = t.space().row_genes[0]
    early = t.result(0, 10)
    assert not early["diverged"] and early["steps"] == 10
    full = t.evaluate(EvalTask(key="k", genes=genes, preset=None, steps=100, seed=0, phase="full"))
    assert full["diverged"] and full["steps"] == 50 and full["final_val_loss"] is None
    assert full["flops"] == pytest.approx(t.cost_per_step[0] * 50)


def test_decoding_snaps_to_the_nearest_row(table_dir):
    t = Table(table_dir)
    sp = t.space()
    for i in (0, 7, 31):
        assert sp.nearest(sp.unit_rows[i]) == int(np.flatnonzero((sp.unit_rows == sp.unit_rows[i]).all(1))[0])
        assert sp.decode(sp.unit_rows[i]) == sp.row_genes[sp.nearest(sp.unit_rows[i])]
    # every decoded genome is a row, so the engine's duplicate check works on rows
    rng = np.random.default_rng(1)
    for _ in range(20):
        g = sp.decode(rng.random(2))
        assert t.row_of(g) == sp.nearest(sp.encode(g))
    assert [p.name for p in sp.space] == ["width", "lr"] and sp.space[0].choices == (16, 32, 48, 64)
    assert sp.space[1].log  # spans two decades: log scale


@pytest.mark.parametrize("file,edit,message", [
    ("archs.csv", lambda s: s.replace("cost_per_step", "cost"), "archs.csv:1: missing column 'cost_per_step'"),
    ("archs.csv", None, "archs.csv:4: 6 fields, the header has 5"),
    ("archs.csv", lambda s: s.replace("\nx2,", "\nx2,wide", 1), "archs.csv:4: width must be a number, got 'wide"),
    ("curves.csv", lambda s: s.replace("\nx5,3,train,", "\nx5,3,train,oops"), "curves.csv:{oops}: loss must be a number"),
    ("curves.csv", lambda s: s.replace("x1,1,train", "zz,1,train"), "curve_id 'zz' is not an arch_id"),
    ("curves.csv", lambda s: s.replace("x1,1,train", "x1,1,test"), "split must be one of"),
    ("table.json", lambda s: s.replace('"full_steps": 100', '"full_steps": "100"'), "'full_steps' must be a int"),
    ("table.json", lambda s: s[:-1], "table.json:1: not JSON"),
])
def test_a_malformed_table_names_the_file_and_line(table_dir, tmp_path, file, edit, message):
    d = tmp_path / "t"
    shutil.copytree(table_dir, d)
    before = (d / file).read_text()
    if edit is None:  # the third line of data gets one field too many
        lines = before.splitlines()
        lines[3] += ",7"
        after = "\n".join(lines) + "\n"
    else:
        after = edit(before)
    assert after != before
    oops = next((n for n, ln in enumerate(after.splitlines(), 1) if "oops" in ln), None)
    (d / file).write_text(after)
    with pytest.raises(TableError) as e:
        Table(d)
    assert message.format(oops=oops) in str(e.value)


def test_every_method_runs_against_the_table(table_dir):
    from evo.peers import missing
    from evo.tablestats import METHODS, at_budget, run_method

    t = load_table(str(table_dir))
    unit = t.mean_full_cost()
    for m in (m for m in METHODS if not missing(m)):  # dehb: an optional install
        r = run_method(str(table_dir), m, 3, 20 * unit)
        assert r["history"], m
        costs = [h["cost"] for h in r["history"]]
        bests = [h["best"] for h in r["history"]]
        assert costs == sorted(costs) and bests == sorted(bests, reverse=True), m
        assert min(bests) >= t.best_target - 1e-12
        found = at_budget(r["history"], 20 * unit)
        assert found in t.targets, m  # the true target of a real row
        if m != "baseline":
            assert costs[-1] > 10 * unit, m  # the search used its budget
        again = run_method(str(table_dir), m, 3, 20 * unit)
        assert again["history"] == r["history"], m  # same seed, same search


def test_experiment_on_a_table_prints_paired_statistics(table_dir, tmp_path, capsys):
    from evo.experiment import main

    s = main(["--table", str(table_dir), "--seeds", "6", "--methods", "combined,random,male",
              "--budgets", "5,15", "--out", str(tmp_path / "res"), "--workers", "1", "--json"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["budgets"] == [5.0, 15.0]
    assert set(last["methods"]) == {"combined", "random", "male"} and set(last["wilcoxon_p"]) == {"random", "male"}
    for m, d in last["methods"].items():
        assert len(d["median_final"]) == 2 and d["median_final"][1] <= d["median_final"][0] + 1e-12
        assert all(r >= -1e-12 for r in d["median_regret"])
    assert all(0 <= p <= 1 for ps in last["wilcoxon_p"].values() for p in ps if not math.isnan(p))
    assert s["seeds"] == 6 and (tmp_path / "res" / "regret_vs_cost.png").stat().st_size > 10_000
    assert "| combined |" in (tmp_path / "res" / "table.md").read_text()


@pytest.mark.slow
def test_evo_run_searches_a_table_end_to_end(table_dir, tmp_path, monkeypatch):
    """`evo.run --table`: MLflow, checkpoint, summary and figures as in a live search, by lookup."""
    from evo.checkpoint import read_snapshot
    from evo.run import cli

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = ["--table", str(table_dir), "--gens", "3", "--out", str(out), "--no-progress",
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert cli(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    snap = read_snapshot(out)
    t = load_table(str(table_dir))
    targets = [r["target"] for r in snap["archive"]]
    assert summary["best"]["best_val_loss"] == pytest.approx(min(targets))
    for r in snap["archive"]:  # every archive target is its table row's target
        assert r["target"] == pytest.approx(t.targets[t.row_of(r["genes"])])
    assert summary["compute"]["full_trainings"] == len(snap["history"]) >= 8
    assert (out / "val_curves.png").stat().st_size > 5_000
    assert cli(argv + ["--resume"]) == 0  # a finished search resumes to the same result
    assert json.loads((out / "summary.json").read_text())["best"] == summary["best"]


def test_bench_build_writes_a_table_that_reproduces_its_trainings(tmp_path, shakespeare_path, capsys):
    """A 3-architecture build: the table's lookups give back what the trainer returned."""
    from evo.bench import describe, main

    out = tmp_path / "tab"
    argv = ["build", "--n", "3", "--full-steps", "30", "--noise", "1", "--noise-seeds", "2", "--workers", "0",
            "--data", str(shakespeare_path), "--out", str(out)]
    assert main(argv) == 0
    journal = {json.loads(ln)["key"]: json.loads(ln) for ln in (out / "build.jsonl").read_text().splitlines()}
    assert sorted(journal) == ["a0", "a0-s1", "a0-s2", "a1", "a2"]
    t = Table(out)
    assert t.ids == ["a0", "a1", "a2"] and t.full_steps == 30 and t.early_steps == 3
    for i, aid in enumerate(t.ids):
        r = journal[aid]
        assert t.targets[i] == pytest.approx(r["best_val_loss"], abs=1e-5)
        full = t.result(i, 30)
        assert full["eval_steps"] == r["eval_steps"] and full["flops"] == pytest.approx(r["flops"], rel=1e-5)
        assert full["train_losses"] == pytest.approx(r["train_losses"], abs=1e-5)
    from models.presets import get_preset
    assert t.space().baseline == get_preset("tiny").baseline  # a0 is the preset's baseline
    d = describe(str(out))
    s = [journal[k]["best_val_loss"] for k in ("a0", "a0-s1", "a0-s2")]
    assert d["noise_archs"] == 1 and d["seed_noise_std"] == pytest.approx(np.std(s, ddof=1), abs=2e-5)
    lines = (out / "build.jsonl").read_text()
    assert main(argv) == 0  # a finished build resumes without training anything
    assert (out / "build.jsonl").read_text() == lines and Table(out).targets.tolist() == t.targets.tolist()


@pytest.mark.slow
def test_evo_predict_reads_the_committed_tiny_table(tmp_path, capsys):
    """The tiny table's curves.csv is the evo.predict format: last-loss tau from the CLI equals the
    table's own early-val-vs-target tau."""
    from pathlib import Path

    from scipy.stats import kendalltau

    from evo.predict import main as predict

    d = Path(__file__).resolve().parents[1] / "benchmarks" / "tables" / "tiny"
    t = load_table(str(d))
    finals = tmp_path / "finals.csv"
    finals.write_text("curve_id,final_loss\n" + "".join(f"{a},{y}\n" for a, y in zip(t.ids, t.targets)))
    assert predict(["--curves", str(d / "curves.csv"), "--early-steps", "60", "--full-steps", "600",
                    "--predictor", "last-loss", "--finals", str(finals), "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    early = [t.result(i, 60)["val_losses"][-1] for i in range(len(t.ids))]
    assert got["n"] == 500 and got["kendall_tau"] == pytest.approx(kendalltau(early, t.targets)[0], abs=1e-9)
