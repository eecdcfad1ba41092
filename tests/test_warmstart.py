"""Warm start (evo.warmstart): records from a table or from earlier searches in MLflow carry the
features and targets the engine computes itself; other budgets are refused; `evo.bench split`
writes two valid tables with disjoint rows."""
import csv
import json
import time

import numpy as np
import pytest

from evo.checkpoint import read_snapshot
from evo.genome import genes_key
from evo.table import Table
from evo.warmstart import load_warm_start
from primitives.features import ALL_FEATURES, curve_features
from tests.table_helpers import make_table

E, F = 10, 100  # make_table's budgets


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A synthetic table and a finished 2-generation `evo.run --table` search on it, logged to a
    private sqlite store: (table dir, tracking uri, the search's checkpoint snapshot, its run id)."""
    from evo.run import cli

    tmp = tmp_path_factory.mktemp("warm")
    d = make_table(tmp / "synthetic")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    assert cli(["--table", str(d), "--gens", "2", "--start", "full", "--out", str(tmp / "out"), "--no-progress",
                "--tracking-uri", uri, "--experiment", "warm"]) == 0
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    return d, uri, read_snapshot(tmp / "out"), summary["mlflow"]["run_id"]


def by_genes(records):
    return {genes_key(r.genes): r for r in records}


def test_table_records_have_the_engines_features_and_targets(searched):
    d, _, snap, _ = searched
    t = Table(d)
    recs = load_warm_start(str(d), early_steps=E, full_steps=F, features=ALL_FEATURES)
    assert [r.key for r in recs] == [f"warm:synthetic:x{i}" for i in range(60)]
    assert [r.target for r in recs] == t.targets.tolist()
    assert {r.role for r in recs} == {"warm"} and all(r.run_id is None for r in recs)
    warm = by_genes(recs)
    assert len(snap["archive"]) >= 8
    for a in snap["archive"]:  # what the search computed for its own early phases
        r = warm[genes_key(a["genes"])]
        assert r.target == a["target"] and r.features == a["features"]


def test_a_warm_records_features_equal_those_computed_from_the_csv_files(searched):
    d, *_ = searched
    pts = {"train": [], "val": []}
    with open(d / "curves.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["curve_id"] == "x3" and int(row["step"]) <= E:
                pts[row["split"]].append((int(row["step"]), float(row["loss"])))
            if row["curve_id"] == "x3" and row["split"] == "val":
                pts.setdefault("all_val", []).append(float(row["loss"]))
    with open(d / "archs.csv", newline="") as fh:
        arch = next(r for r in csv.DictReader(fh) if r["arch_id"] == "x3")
    want = curve_features(*zip(*pts["train"]), *zip(*pts["val"]), E, F, n_params=float(arch["n_params"]),
                          lr=float(arch["lr"]))
    (rec,) = [r for r in load_warm_start(str(d), early_steps=E, full_steps=F, features=ALL_FEATURES)
              if r.key.endswith(":x3")]
    assert rec.features == pytest.approx(want, rel=1e-12) and "log_lr" in rec.features
    assert rec.target == min(pts["all_val"])


def test_other_budgets_a_missing_directory_and_nothing_usable_are_refused(searched, tmp_path):
    d, uri, _, run_id = searched
    with pytest.raises(ValueError, match="its full_steps is 100, the search's is 90"):
        load_warm_start(str(d), early_steps=E, full_steps=90, features=())
    with pytest.raises(ValueError, match="its early_steps is 10, the search's is 20"):
        load_warm_start(str(d), early_steps=20, full_steps=F, features=())
    with pytest.raises(ValueError, match="full_steps=100, early_steps=10"):  # what the store holds
        load_warm_start("mlflow", early_steps=20, full_steps=F, features=(), tracking_uri=uri, experiment="warm")
    with pytest.raises(ValueError, match="no such directory"):
        load_warm_start(str(tmp_path / "nope"), early_steps=E, full_steps=F, features=())
    with pytest.raises(ValueError, match="unknown feature 'v_bogus'"):
        load_warm_start(str(d), early_steps=E, full_steps=F, features=("v_bogus",))
    with pytest.raises(ValueError, match="no experiment named 'nope'"):
        load_warm_start("mlflow", early_steps=E, full_steps=F, features=(), tracking_uri=uri, experiment="nope")
    every = {f"x{i}" for i in range(60)}
    with pytest.raises(ValueError, match="no usable fully trained curve .*60 excluded"):
        load_warm_start(str(d), early_steps=E, full_steps=F, features=(), exclude=every)
    with pytest.raises(ValueError, match="1 excluded search"):
        load_warm_start("mlflow", early_steps=E, full_steps=F, features=(), tracking_uri=uri, experiment="warm",
                        exclude={run_id})


def test_exclude_leaves_out_rows_by_id_or_genes(searched):
    d, *_ = searched
    t = Table(d)
    genes = t.space().row_genes
    recs = load_warm_start(str(d), early_steps=E, full_steps=F, features=(), exclude={"x0", genes_key(genes[5])})
    keys = [r.key for r in recs]
    assert len(keys) == 58 and "warm:synthetic:x0" not in keys and "warm:synthetic:x5" not in keys


def test_mlflow_records_are_the_searchs_fully_trained_evaluations(searched):
    from mlflow.tracking import MlflowClient

    d, uri, snap, run_id = searched
    recs = load_warm_start("mlflow", early_steps=E, full_steps=F, features=ALL_FEATURES, tracking_uri=uri,
                           experiment="warm")
    archive = {genes_key(a["genes"]): a for a in snap["archive"]}
    assert set(by_genes(recs)) == set(archive) and len(recs) == len(archive)  # one record per architecture
    client = MlflowClient(uri)
    t = Table(d)
    for r in recs:
        a = archive[genes_key(r.genes)]
        assert r.target == a["target"] == t.targets[t.row_of(r.genes)]
        assert r.features == a["features"]
        child = client.get_run(r.key.removeprefix("warm:mlflow:"))
        assert child.data.tags["mlflow.parentRunId"] == run_id and child.data.tags["dimorph.phase"] == "full"
    starts = [client.get_run(r.key.removeprefix("warm:mlflow:")).info.start_time for r in recs]
    assert starts == sorted(starts)
    assert len(snap["archive"]) >= len(recs)  # an architecture the search trained twice counts once
    again = load_warm_start("mlflow", early_steps=E, full_steps=F, features=ALL_FEATURES, tracking_uri=uri,
                            experiment="warm", exclude={genes_key(recs[0].genes)})
    assert [r.key for r in again] == [r.key for r in recs[1:]]
    first = recs[0].key.removeprefix("warm:mlflow:")
    again = load_warm_start("mlflow", early_steps=E, full_steps=F, features=(), tracking_uri=uri,
                            experiment="warm", exclude={first})
    assert recs[0].key not in [r.key for r in again]


def test_mlflow_keeps_finished_searches_at_the_same_budgets_once_per_architecture(searched):
    """Searches logged the way the engine logs them: a running one, one at other budgets, an early-only
    evaluation and a repeated architecture are left out."""
    from evo.tracking import Tracker

    d, uri, _, _ = searched
    t = Table(d)
    genes = t.space().row_genes
    tr = Tracker(uri, "extra")

    def search(rows, full=F, finish=True, early_only=()):
        tr.start_search({"preset.name": "table:synthetic", "preset.full_steps": full, "preset.early_steps": E},
                        run_name="s")
        for i in rows:
            time.sleep(0.002)
            res = t.result(i, E if i in early_only else full)
            tr.log_phase(f"x{i}", res, phase="early" if i in early_only else "straight", outcome=True,
                         genes=genes[i], seed=0)
        if finish:
            tr.finish(None)
        return tr.run_id

    search([5, 6], early_only=(6,))
    search([5, 8])           # x5 again: the same architecture
    search([9], finish=False)  # still running
    search([11], full=50)    # other budgets
    recs = load_warm_start("mlflow", early_steps=E, full_steps=F, features=ALL_FEATURES, tracking_uri=uri,
                           experiment="extra")
    table = {r.key.rsplit(":", 1)[1]: r for r in load_warm_start(str(d), early_steps=E, full_steps=F, features=())}
    assert [genes_key(r.genes) for r in recs] == [genes_key(genes[5]), genes_key(genes[8])]
    for r, row in zip(recs, ("x5", "x8")):
        assert r.target == table[row].target and r.features == table[row].features
    with pytest.raises(ValueError, match="preset 'table:synthetic'"):
        load_warm_start("mlflow", early_steps=E, full_steps=F, features=(), tracking_uri=uri, experiment="extra",
                        preset="table:other")


def test_split_writes_two_disjoint_valid_tables(searched, tmp_path):
    from evo.bench import main

    d, *_ = searched
    src = Table(d)
    a, b = tmp_path / "A", tmp_path / "B"
    assert main(["split", str(d), "--out", str(a), str(b), "--seed", "3", "--frac", "0.3"]) == 0
    ta, tb = Table(a), Table(b)
    assert len(ta.ids) == 18 and len(tb.ids) == 42 and not set(ta.ids) & set(tb.ids)
    assert sorted(ta.ids + tb.ids, key=src.index.get) == src.ids
    assert ta.ids == sorted(ta.ids, key=src.index.get)  # rows keep their order
    assert "x0" in tb.ids and tb.space().baseline == src.space().baseline  # the baseline row goes to B
    assert ta.meta["baseline"] == ta.ids[0]
    assert (ta.meta["name"], tb.meta["name"]) == ("synthetic-A", "synthetic-B")
    assert ta.meta["split"] == {"of": "synthetic", "source": str(d), "part": "A", "seed": 3, "frac": 0.3,
                                "rows": 18, "source_rows": 60}
    for t in (ta, tb):
        assert (t.full_steps, t.early_steps, t.genes) == (F, E, src.genes)
        for i, aid in enumerate(t.ids):
            j = src.index[aid]
            assert t.targets[i] == src.targets[j] and t.n_params[i] == src.n_params[j]
            for split in ("train", "val"):
                assert np.array_equal(t.curves[i][split][0], src.curves[j][split][0])
                assert np.array_equal(t.curves[i][split][1], src.curves[j][split][1])
    # a search on B warm-started from A: no curve in both
    warm = load_warm_start(str(a), early_steps=E, full_steps=F, features=())
    assert [r.key for r in warm] == [f"warm:synthetic-A:{x}" for x in ta.ids]
    assert not {genes_key(r.genes) for r in warm} & {genes_key(g) for g in tb.space().row_genes}
    c, e = tmp_path / "C", tmp_path / "D"
    assert main(["split", str(d), "--out", str(c), str(e), "--seed", "3", "--frac", "0.3"]) == 0
    assert Table(c).ids == ta.ids  # the same seed draws the same rows
    assert main(["split", str(d), "--out", str(a), str(tmp_path / "E")]) == 2  # A is not empty
    assert main(["split", str(d), "--out", str(tmp_path / "F"), str(tmp_path / "G"), "--frac", "0.01"]) == 2


def test_the_warm_start_benchmark_on_the_synthetic_table(searched, tmp_path):
    """benchmarks/warmstart_table.py: disjoint test / archive / nested warm sets, last-loss checked
    against scipy on the raw curves, paired differences consistent with the taus."""
    from scipy.stats import kendalltau

    from benchmarks import warmstart_table as wb

    d, *_ = searched
    res = wb.main(["--table", str(d), "--warm-sizes", "0,10,25", "--archive-size", "10", "--test-size", "20",
                   "--splits", "2", "--pop", "10", "--gens", "2", "--workers", "1", "--out", str(tmp_path / "w.json")])
    assert json.loads((tmp_path / "w.json").read_text())["results"] == res["results"]
    t = Table(d)
    v_last = {a: t.result(i, E)["val_losses"][-1] for i, a in enumerate(t.ids)}
    for s, sp in enumerate(res["splits"]):
        test, arch, pool = sp["test"], sp["archive"], sp["warm_pool"]
        assert (len(test), len(arch), len(pool)) == (20, 10, 25)
        assert not (set(test) & set(arch) or set(test) & set(pool) or set(arch) & set(pool))
        want = kendalltau([v_last[a] for a in test], [t.targets[t.index[a]] for a in test])[0]
        for r in res["results"]:
            assert r["last-loss"]["values"][s] == pytest.approx(want, abs=1e-12)
            assert r["female_minus_last_loss"]["values"][s] == pytest.approx(
                r["female"]["values"][s] - r["last-loss"]["values"][s])
            assert r["n_fit"][s] + r["n_holdout"][s] == 10 + r["warm"]
    assert [r["warm"] for r in res["results"]] == [0, 10, 25]
    assert res["results"][0]["female_minus_no_warm"]["values"] == [0.0, 0.0]


def test_a_search_warm_started_from_the_other_half_of_its_table(searched, tmp_path):
    from evo.bench import main
    from evo.run import cli

    d, *_ = searched
    a, b = tmp_path / "A", tmp_path / "B"
    assert main(["split", str(d), "--out", str(a), str(b), "--seed", "1"]) == 0
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--table", str(b), "--gens", "2", "--start", "full", "--no-progress", "--tracking-uri", uri, "--warm-start", str(a),
            "--bootstrap", "3", "--males", "4", "--offspring", "3"]
    assert cli(args + ["--out", str(tmp_path / "w")]) == 0
    snap = read_snapshot(tmp_path / "w")
    warm = load_warm_start(str(a), early_steps=E, full_steps=F, features=tuple(snap["female_features"]))
    assert len(warm) == len(Table(a).ids) == 30
    assert [row.get("archive/warm") for row in snap["logbook"]] == [30, 30, 30]
    assert len(snap["archive"]) == snap["compute"]["full_trainings"]  # the warm curves stay the females'
    assert snap["logbook"][0]["archive/size"] == 3  # the search's own archive: its 3 bootstraps
    # resumed, the same warm curves are used (their keys are journaled) and nothing changes
    assert cli(args + ["--out", str(tmp_path / "w"), "--resume", "--gens", "3"]) == 0
    again = read_snapshot(tmp_path / "w")
    assert again["logbook"][:3] == snap["logbook"] and again["logbook"][3]["archive/warm"] == 30
    # the table it searches must not be the one it learns from
    assert cli(args + ["--out", str(tmp_path / "bad"), "--warm-start", str(d)]) == 2
