"""benchmarks/predictors_table.py on a small synthetic table: every predictor scored, last-loss
checked against an independent computation, and the same seed giving the same results."""
import csv
import json
import math

import numpy as np
import pytest
from scipy.stats import kendalltau

from benchmarks import predictors_table as pt
from tests.table_helpers import make_table

ARGS = ["--early-fracs", "0.2", "--archive-sizes", "20", "--splits", "2", "--pop", "10", "--gens", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = make_table(tmp_path_factory.mktemp("tab") / "synthetic", n=60)
    out = tmp_path_factory.mktemp("out")
    docs = []
    for k, workers in enumerate(("2", "1")):
        pt.main(["--table", str(d), *ARGS, "--workers", workers, "--out", str(out / f"r{k}.json")])
        docs.append(json.loads((out / f"r{k}.json").read_text()))
    return d, docs


def test_every_predictor_has_finite_taus_in_range(runs):
    _, (doc, _) = runs
    want = [p for p in pt.PREDICTORS if p != "lcsvr" or pt.have_sklearn()]
    assert doc["predictors"] == want and len(want) >= 7
    assert doc["setup"]["n_usable"] == 60 and doc["setup"]["test_size"] == 40
    (row,) = doc["results"]
    assert (row["early_frac"], row["early_steps"], row["archive_size"]) == (0.2, 20, 20)
    for p in want:
        m = row["predictors"][p]
        assert len(m["taus"]) == 2 and all(math.isfinite(t) and -1 <= t <= 1 for t in m["taus"]), p
        assert m["mean"] == pytest.approx(np.mean(m["taus"]))
        assert m["ci95"][0] <= m["mean"] + 1e-12 and m["mean"] <= m["ci95"][1] + 1e-12
    diff = [f - l for f, l in zip(row["predictors"]["female"]["taus"], row["predictors"]["last-loss"]["taus"])]
    assert row["female_minus_last_loss"]["mean"] == pytest.approx(np.mean(diff))
    assert len(row["female"]["formulas"]) == 2
    for sp in doc["splits"]:
        assert len(sp["test"]) == 40 and len(sp["archives"]["20"]) == 20
        assert not set(sp["test"]) & set(sp["archives"]["20"])


def test_last_loss_tau_matches_scipy_on_the_raw_curves(runs):
    d, (doc, _) = runs
    val = {}
    with open(d / "curves.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["split"] == "val":
                val.setdefault(r["curve_id"], []).append((int(r["step"]), float(r["loss"])))
    for split in range(2):
        test = doc["splits"][split]["test"]
        v_last = [max(p for p in val[a] if p[0] <= 20)[1] for a in test]  # last val point at step <= E
        target = [min(v for _, v in val[a]) for a in test]                # best val over the full budget
        expected = kendalltau(v_last, target)[0]
        assert doc["results"][0]["predictors"]["last-loss"]["taus"][split] == pytest.approx(expected, abs=1e-12)


def test_same_seed_same_results_whatever_the_workers(runs):
    _, (a, b) = runs
    assert a["timing"]["workers"] == 2 and b["timing"]["workers"] == 1
    for key in ("predictors", "setup", "results", "splits"):
        assert a[key] == b[key], key


def test_two_point_extrapolation_and_sotl_e():
    s = np.array([0, 10, 20, 30])
    assert pt.lin_extrap(s, np.array([4.0, 3.0, 2.5, 2.0]), 100) == pytest.approx(2.0 - 0.05 * 70)
    assert pt.lin_extrap(s[:1], np.array([3.0]), 100) == 3.0
    steps = np.arange(1, 21)
    assert pt.sotl_e(steps, steps.astype(float), 20) == pytest.approx(sum(range(16, 21)))
