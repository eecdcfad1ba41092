"""evo.fit: evolve a predictor on the user's curves, hold a test part out honestly, export it for
evo.predict; the same FILE:LINE errors as evo.predict."""
import csv
import json
import re

import numpy as np
import pytest

from evo.fit import main, split_test
from evo.predict import main as predict_main
from primitives.export import load_predictor
from tests.table_helpers import make_table

E, F = 10, 100
TINY = ["--pop", "8", "--gens", "3", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A synthetic table's curves (the evo.predict format), its finals and meta as CSV files."""
    d = make_table(tmp_path_factory.mktemp("tab") / "t", n=40, full=F, early=E)
    vals = {}
    for row in csv.DictReader(open(d / "curves.csv")):
        if row["split"] == "val":
            vals.setdefault(row["curve_id"], []).append(float(row["loss"]))
    finals = d / "finals.csv"
    finals.write_text("curve_id,final_loss\n" + "".join(f"{c},{min(v)!r}\n" for c, v in vals.items()))
    meta = d / "meta.csv"
    meta.write_text("curve_id,n_params,lr\n" + "".join(
        f"{r['arch_id']},{r['n_params']},{r['lr']}\n" for r in csv.DictReader(open(d / "archs.csv"))))
    return {"dir": d, "curves": str(d / "curves.csv"), "finals": str(finals), "meta": str(meta),
            "targets": {c: min(v) for c, v in vals.items()}}


def fit_args(data, out, *extra):
    return ["--curves", data["curves"], "--finals", data["finals"], "--early-steps", str(E),
            "--full-steps", str(F), "--out", str(out), *TINY, *extra]


def test_fit_writes_a_predictor_that_evo_predict_applies(data, tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(fit_args(data, out, "--meta", data["meta"])) == 0
    printed = capsys.readouterr().out
    for name in ("formula (exported)", "last-loss", "sotl", "power-law", "held-out tau"):
        assert name in printed
    doc = json.loads((out / "predictor.json").read_text())
    assert doc["fitted_at"] == {"early_steps": E, "full_steps": F, "early_frac": 0.1}
    assert doc["calibration"]["a"] > 0 and (out / "predictor.txt").read_text() == doc["sympy"] + "\n"
    assert (out / "predictor.tex").read_text() == doc["latex"] + "\n"
    report = json.loads((out / "report.json").read_text())
    assert report["gens_run"] == 3 and report["arch_features"] is True
    pred_csv = tmp_path / "pred.csv"
    assert predict_main(["--curves", data["curves"], "--early-steps", str(E), "--full-steps", str(F),
                         "--formula", str(out / "predictor.json"), "--meta", data["meta"],
                         "--finals", data["finals"], "--out", str(pred_csv)]) == 0
    assert capsys.readouterr().err == ""  # same early fraction: no warning
    rows = list(csv.DictReader(open(pred_csv)))
    assert len(rows) == 40
    preds = {r["curve_id"]: float(r["predicted_final"]) for r in rows}
    # calibrated: predictions come out as losses, near the targets (MAE on the held-out part)
    test = report["test_ids"]
    mae = np.mean([abs(preds[c] - data["targets"][c]) for c in test])
    assert mae == pytest.approx(report["scores"]["formula"]["test_mae"], rel=1e-9)
    spread = np.ptp(list(data["targets"].values()))
    assert mae < spread
    # the held-out tau printed is the exported file's, scored by evo.predict's own code
    from evo.predict import scores
    s = scores({c: preds[c] for c in test}, {c: (data["targets"][c],) for c in test}, True)
    assert s["kendall_tau"] == pytest.approx(report["scores"]["formula"]["test_kendall_tau"], abs=1e-12)


def test_same_seed_same_files(data, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main(fit_args(data, a, "--seed", "3", "--gens", "6")) == 0
    assert main(fit_args(data, b, "--seed", "3", "--gens", "6")) == 0
    assert (a / "predictor.json").read_bytes() == (b / "predictor.json").read_bytes()
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (a, b))
    ra.pop("seconds"), rb.pop("seconds")
    assert ra == rb
    assert main(fit_args(data, c, "--seed", "4", "--gens", "6")) == 0
    rc = json.loads((c / "report.json").read_text())
    assert rc["test_ids"] == ra["test_ids"]  # the split depends on the curve ids only


def test_held_out_part_is_never_fitted_on(data, tmp_path):
    """No curve is in both parts, and the test curves' finals do not reach the fit: scrambling them
    changes the held-out scores only, not the exported predictor."""
    out = tmp_path / "a"
    assert main(fit_args(data, out, "--gens", "5")) == 0
    report = json.loads((out / "report.json").read_text())
    ids = list(data["targets"])
    test = set(report["test_ids"])
    mask = split_test(ids, 0.3)
    assert test == {c for c, m in zip(ids, mask) if m}
    assert report["n_train"] + report["n_test"] == len(ids) == 40 and len(test) == 12
    scrambled = tmp_path / "finals.csv"
    rng = np.random.default_rng(0)
    lines = [f"{c},{(t if c not in test else rng.uniform(0, 10))!r}" for c, t in data["targets"].items()]
    scrambled.write_text("curve_id,final_loss\n" + "\n".join(lines) + "\n")
    args = fit_args(data, tmp_path / "b", "--gens", "5")
    args[args.index("--finals") + 1] = str(scrambled)
    assert main(args) == 0
    doc_a = json.loads((out / "predictor.json").read_text())
    doc_b = json.loads((tmp_path / "b" / "predictor.json").read_text())
    assert doc_a == doc_b
    rb = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rb["scores"]["last-loss"]["test_kendall_tau"] != report["scores"]["last-loss"]["test_kendall_tau"]


def test_reference_rule_kept_when_nothing_beats_it(data, tmp_path):
    """Finals that v_last ranks perfectly: no formula can beat it, so the export is v_last, calibrated
    to the targets' scale (final = 2 * v_last + 1 exactly)."""
    vlast = {}
    for row in csv.DictReader(open(data["curves"])):
        if row["split"] == "val" and int(row["step"]) <= E:
            vlast[row["curve_id"]] = max(vlast.get(row["curve_id"], (-1, 0)), (int(row["step"]), float(row["loss"])))
    finals = tmp_path / "f.csv"
    finals.write_text("curve_id,final_loss\n" + "".join(f"{c},{2 * v + 1!r}\n" for c, (_, v) in vlast.items()))
    args = fit_args(data, tmp_path / "o", "--gens", "5")
    args[args.index("--finals") + 1] = str(finals)
    assert main(args) == 0
    doc = json.loads((tmp_path / "o" / "predictor.json").read_text())
    assert doc["tree"] == "v_last" and doc["meta"]["is_reference"] is True
    assert doc["calibration"] == {"a": pytest.approx(2.0, rel=1e-5), "b": pytest.approx(1.0, rel=1e-5)}
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["scores"]["formula"]["test_kendall_tau"] == pytest.approx(1.0)
    assert report["scores"]["formula"]["test_mae"] < 1e-4


@pytest.mark.parametrize("file, edit, message", [
    ("curves", lambda t: re.sub(r"^x3,4,train,.*$", "x3,4,train,abc", t, flags=re.M),
     r"curves\.csv:\d+: loss must be a number, got 'abc'"),
    ("curves", lambda t: re.sub(r"^x3,4,train,", "x3,4,test,", t, flags=re.M), r"curves\.csv:\d+: split must be"),
    ("finals", lambda t: re.sub(r"^x5,.*$", "x5,nan", t, flags=re.M), r"finals\.csv:7: final_loss must be finite"),
    ("finals", lambda t: "curve_id,loss\nx0,1\n", r"finals\.csv:1: missing column 'final_loss'"),
    ("meta", lambda t: re.sub(r"^x2,\d+,", "x2,-5,", t, flags=re.M), r"meta\.csv:4: n_params must be a finite positive"),
    ("finals", lambda t: "\n".join(t.splitlines()[:6]) + "\n", r"5 curve\(s\) have a final; evo.fit needs at least 9"),
])
def test_bad_input_exits_2_with_file_and_line(data, tmp_path, capsys, file, edit, message):
    path = tmp_path / f"{file}.csv"
    path.write_text(edit(open(data[file]).read()))
    args = fit_args(data, tmp_path / "o", "--meta", data["meta"])
    args[args.index(f"--{file}") + 1] = str(path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m evo.fit: error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not (tmp_path / "o" / "predictor.json").exists()


def test_progress_is_plain_lines_off_a_terminal(data, tmp_path, capsys):
    args = [a for a in fit_args(data, tmp_path / "o", "--gens", "4") if a != "--no-progress"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert [line.split(":")[0] for line in err.splitlines()] == [f"generation {g}/4" for g in (1, 2, 3, 4)]


def test_front_interval_and_blend_are_exported(data, tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(fit_args(data, out, "--gens", "4")) == 0
    printed = capsys.readouterr().out
    assert "front (tau on the training part against size" in printed and "80% interval" in printed
    doc = json.loads((out / "predictor.json").read_text())
    report = json.loads((out / "report.json").read_text())
    front = json.loads((out / "front.json").read_text())
    sizes = [d["meta"]["size"] for d in front]
    taus = [d["meta"]["train_kendall_tau"] for d in front]
    assert sizes == sorted(sizes) and taus == sorted(taus) and len(set(sizes)) == len(sizes)
    assert sum(d["meta"]["default"] for d in front) <= 1
    assert [d["meta"]["default"] for d in front] == [d["tree"] == doc["tree"] for d in front]
    for d in front:  # every member is a predictor file of its own
        assert load_predictor(d).features == d["features"]
    iv = doc["interval"]
    assert iv["level"] == 0.8 and iv["lo"] <= 0 <= iv["hi"] and iv["n"] == report["n_train"]
    lo, hi = report["scores"]["formula"]["test_kendall_tau_ci95"]
    assert lo <= report["scores"]["formula"]["test_kendall_tau"] <= hi
    # evo.predict gives the interval and its coverage on the curves it scores
    base = ["--curves", data["curves"], "--early-steps", str(E), "--full-steps", str(F),
            "--formula", str(out / "predictor.json")]
    assert predict_main(base + ["--finals", data["finals"], "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    preds = load_predictor(out / "predictor.json")
    assert (s["interval"]["lo"], s["interval"]["hi"]) == (iv["lo"], iv["hi"])
    assert 0.0 <= s["interval"]["coverage"] <= 1.0
    pred_csv = tmp_path / "p.csv"
    assert predict_main(base + ["--interval", "--out", str(pred_csv)]) == 0
    rows = list(csv.DictReader(open(pred_csv)))
    assert len(rows) == 40 and preds is not None
    for r in rows:
        p = float(r["predicted_final"])
        assert float(r["lo"]) == pytest.approx(p + iv["lo"]) and float(r["hi"]) == pytest.approx(p + iv["hi"])
    inside = np.mean([float(r["lo"]) <= data["targets"][r["curve_id"]] <= float(r["hi"]) for r in rows])
    assert s["interval"]["coverage"] == pytest.approx(inside)
    assert predict_main(base[:-2] + ["--predictor", "last-loss", "--interval"]) == 2
    assert "has no error interval" in capsys.readouterr().err
    assert main(fit_args(data, tmp_path / "x", "--blend", "mean")) == 2


def test_max_seconds_counts_from_the_start_and_stops_after_one_generation(data, tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(fit_args(data, out, "--gens", "50", "--max-seconds", "1e-6")) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["gens_run"] == 1 and report["stopped_by_max_seconds"] is True
    assert "1 generation(s) of 8 formulas (stopped by --max-seconds)" in capsys.readouterr().out
