import json
import math
import random
import re

import pytest

from evo.predict import main
from primitives.export import export_predictor
from primitives.features import ALL_FEATURES
from primitives.gp import tree_from_string
from primitives.pset import make_pset

E, F = 60, 600
# last early val loss per curve; "e" has no final (skipped in the scores)
V_LAST = {"a": 2.0, "b": 2.5, "c": 3.0, "d": 3.5, "e": 2.7}
FINALS = {"a": 1.5, "b": 1.8, "c": 2.2, "d": 1.9}
# predictions a<b<c<d vs finals a<b<d<c: 5 concordant, 1 discordant pair
TAU, RHO, MAE = 4 / 6, 0.8, (0.5 + 0.7 + 0.8 + 1.6) / 4


def write(path, text):
    path.write_text(text)
    return str(path)


@pytest.fixture()
def files(tmp_path):
    rows = []
    for cid, v in V_LAST.items():
        for step in range(0, 2 * E + 1, 10):  # points after E must be ignored
            rows.append(f"{cid},{step},train,{4.0 - step / 100:.3f}")
        rows += [f"{cid},30,val,3.9", f"{cid},{E},val,{v}", f"{cid},{2 * E},val,0.1"]
    random.Random(0).shuffle(rows)  # any row order
    curves = write(tmp_path / "curves.csv", "curve_id,step,split,loss\n" + "\n".join(rows) + "\n")
    finals = write(tmp_path / "finals.csv",
                   "curve_id,final_loss\n" + "".join(f"{c},{v}\n" for c, v in FINALS.items()))
    meta = write(tmp_path / "meta.csv", "curve_id,n_params,lr\n" + "".join(
        f"{c},{10 ** (i + 3)},1e-3\n" for i, c in enumerate(V_LAST)))
    return {"curves": curves, "finals": finals, "meta": meta, "dir": tmp_path}


def base_args(files, *extra):
    return ["--curves", files["curves"], "--early-steps", str(E), "--full-steps", str(F), *extra]


def formula_file(files, text, name="f.json"):
    pset = make_pset(ALL_FEATURES)
    doc = export_predictor(tree_from_string(text, pset), pset, simplify=False)
    return write(files["dir"] / name, json.dumps(doc))


def test_last_loss_rows_and_scores(files, capsys):
    out = files["dir"] / "pred.csv"
    assert main(base_args(files, "--predictor", "last-loss", "--finals", files["finals"],
                          "--out", str(out))) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "curve_id,predicted_final"
    assert dict(line.split(",") for line in lines[1:]) == {c: repr(v) for c, v in V_LAST.items()}
    text = capsys.readouterr().out
    assert f"n=4 kendall_tau={TAU:.6f} spearman={RHO:.6f} mae={MAE:.6g}" in text
    assert "1 curve(s) without a final were skipped" in text


def test_json_scores_only(files, capsys):
    assert main(base_args(files, "--predictor", "last-loss", "--finals", files["finals"],
                          "--json")) == 0
    captured = capsys.readouterr()
    s = json.loads(captured.out)
    assert s["n"] == 4
    assert s["kendall_tau"] == pytest.approx(TAU)
    assert s["spearman"] == pytest.approx(RHO)
    assert s["mae"] == pytest.approx(MAE)
    assert "skipped" in captured.err


def test_formula_matches_last_loss(files, capsys):
    f = formula_file(files, "v_last")
    assert main(base_args(files, "--formula", f, "--finals", files["finals"], "--json")) == 0
    assert json.loads(capsys.readouterr().out)["kendall_tau"] == pytest.approx(TAU)
    assert main(base_args(files, "--formula", formula_file(files, "neg(v_last)", "n.json"),
                          "--finals", files["finals"], "--json")) == 0
    assert json.loads(capsys.readouterr().out)["kendall_tau"] == pytest.approx(-TAU)


def test_rows_to_stdout_and_sotl_mae(files, capsys):
    assert main(base_args(files, "--predictor", "sotl", "--finals", files["finals"])) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "curve_id,predicted_final"
    assert len(captured.out.splitlines()) == 6
    assert "mae=n/a" in captured.err  # identical train curves: every sotl ties
    assert "kendall_tau=0.000000" in captured.err


def test_arch_features_need_meta(files, capsys):
    f = formula_file(files, "log_params")
    assert main(base_args(files, "--formula", f)) == 2
    assert "'log_params'" in capsys.readouterr().err
    assert main(base_args(files, "--formula", f, "--meta", files["meta"])) == 0
    rows = dict(line.split(",") for line in capsys.readouterr().out.splitlines()[1:])
    assert float(rows["a"]) == pytest.approx(math.log(1e3))
    assert float(rows["e"]) == pytest.approx(math.log(1e7))


@pytest.mark.parametrize("text,line,problem", [
    ("curve_id,step,loss\na,0,1.0\n", 1, "missing column 'split'"),
    ("curve_id,step,split,loss\na,0,train,1.0\na,5,train,low\n", 3, "loss must be a number"),
    ("curve_id,step,split,loss\na,0,train,1.0\na,-5,train,1.0\n", 3, "non-negative integer"),
    ("curve_id,step,split,loss\na,0,train,1.0\na,2.5,train,1.0\n", 3, "non-negative integer"),
    ("curve_id,step,split,loss\na,0,train,1.0\na,5,test,1.0\n", 3, "split must be"),
    ("curve_id,step,split,loss\na,0,train,1.0\nb,0,train,1\nb,5,train,1\na,99,train,1\n", 2,
     "curve 'a' has 1 train point"),
    ("curve_id,step,split,loss\na,0,train,1.0\na,5,train,nan\n", 3, "loss must be finite"),
    ("curve_id,step,split,loss\na,0,train,1.0\na,5,train,1e308\n", 3,
     "loss must be finite and at most 1e+30 in magnitude (the predictors' range), got '1e308'"),
    ("curve_id,step,split,loss\na,0,train,1.0\na,5,train,-2e30\n", 3, "got '-2e30'"),
    ("curve_id,step,split,loss\na,0,train,1.0\na,\u00b2,train,1.0\n", 3, "non-negative integer"),
])
def test_malformed_curves_exit_2(tmp_path, capsys, text, line, problem):
    path = write(tmp_path / "bad.csv", text)
    code = main(["--curves", path, "--early-steps", str(E), "--full-steps", str(F),
                 "--predictor", "last-loss"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{path}:{line}: " in err and problem in err
    assert "Traceback" not in err


def test_other_errors_exit_2(files, capsys):
    evil = files["dir"] / "evil.json"
    evil.write_text(json.dumps({"format": "dimorph-predictor", "version": 1,
                                "tree": "__import__('os')", "feature_order": ["v_last"]}))
    assert main(base_args(files, "--formula", str(evil))) == 2
    assert "unknown name '__import__'" in capsys.readouterr().err
    assert main(base_args(files, "--predictor", "last-loss", "--json")) == 2
    assert "--json needs --finals" in capsys.readouterr().err
    assert main(base_args(files, "--predictor", "nope")) == 2
    bad_finals = write(files["dir"] / "fin.csv", "curve_id,final_loss\na,1\na,2\n")
    assert main(base_args(files, "--predictor", "sotl", "--finals", bad_finals)) == 2
    assert f"{bad_finals}:3: duplicate curve_id 'a'" in capsys.readouterr().err


def huge_curves(tmp_path, loss):
    rows = [f"{c},{step},train,{loss if c == 'big' else 3 - step / 100}"
            for c in ("big", "small", "mid") for step in range(0, E + 1, 10)]
    return write(tmp_path / "huge.csv", "curve_id,step,split,loss\n" + "\n".join(rows) + "\n")


@pytest.mark.parametrize("predictor", ["last-loss", "sotl", "power-law"])
def test_overflowing_loss_is_refused(tmp_path, capsys, predictor):
    path = huge_curves(tmp_path, "1e308")
    code = main(["--curves", path, "--early-steps", str(E), "--full-steps", str(F),
                 "--predictor", predictor])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith(f"python -m evo.predict: error: {path}:2: loss must be finite and "
                                   f"at most 1e+30")
    assert "'1e308'" in captured.err and "Traceback" not in captured.err
    assert "Warning" not in captured.err


@pytest.mark.parametrize("predictor", ["last-loss", "sotl", "power-law", "formula"])
def test_largest_accepted_loss_gives_finite_predictions(tmp_path, capsys, predictor):
    path = huge_curves(tmp_path, "1e30")
    files = {"dir": tmp_path}
    src = (["--formula", formula_file(files, "add(sotl, rel_drop)")] if predictor == "formula"
           else ["--predictor", predictor])
    assert main(["--curves", path, "--early-steps", str(E), "--full-steps", str(F), *src]) == 0
    captured = capsys.readouterr()
    rows = dict(line.split(",") for line in captured.out.splitlines()[1:])
    preds = {c: float(v) for c, v in rows.items()}
    assert all(math.isfinite(v) for v in preds.values()), preds
    assert preds["big"] > preds["mid"]  # the huge curve is predicted worst, not clipped or lost
    assert preds["mid"] == preds["small"]  # same curve, same prediction
    if predictor in ("last-loss", "power-law"):
        assert preds["big"] == 1e30
    assert "Warning" not in captured.err


def test_early_steps_past_a_curve_is_refused(files, capsys):
    # the curves' train rows end at step 120 (= 2 E)
    code = main(["--curves", files["curves"], "--early-steps", "200", "--full-steps", str(F),
                 "--predictor", "last-loss"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    m = re.fullmatch(rf"python -m evo\.predict: error: {re.escape(files['curves'])}:(\d+): curve "
                     r"'(\w)' ends at train step 120, before --early-steps 200; the early budget "
                     r"must lie within every curve\n", err)
    assert m, err
    lines = open(files["curves"]).read().splitlines()
    assert lines[int(m[1]) - 1] == f"{m[2]},120,train,2.800"  # FILE:LINE is that curve's last row
    # at the end of the curve is fine
    assert main(["--curves", files["curves"], "--early-steps", "120", "--full-steps", str(F),
                 "--predictor", "last-loss"]) == 0


def test_finals_must_share_two_ids_with_the_curves(files, capsys):
    none = write(files["dir"] / "none.csv", "curve_id,final_loss\nx,1.0\ny,2.0\n")
    for extra in ([], ["--json"]):
        assert main(base_args(files, "--predictor", "last-loss", "--finals", none, *extra)) == 2
        captured = capsys.readouterr()
        assert f"{none} and {files['curves']} share no curve_id" in captured.err
        assert captured.out == ""
    one = write(files["dir"] / "one.csv", "curve_id,final_loss\na,1.0\ny,2.0\n")
    assert main(base_args(files, "--predictor", "last-loss", "--finals", one)) == 2
    assert f"{one} and {files['curves']} share only curve 'a'" in capsys.readouterr().err
    two = write(files["dir"] / "two.csv", "curve_id,final_loss\na,1.0\nb,2.0\n")
    assert main(base_args(files, "--predictor", "last-loss", "--finals", two, "--json")) == 0
    assert json.loads(capsys.readouterr().out)["kendall_tau"] == pytest.approx(1.0)


def test_csv_with_a_byte_order_mark(files, capsys):
    assert main(base_args(files, "--predictor", "last-loss", "--finals", files["finals"])) == 0
    plain = capsys.readouterr()
    for key in ("curves", "finals"):
        path = files["dir"] / f"bom-{key}.csv"
        path.write_bytes(b"\xef\xbb\xbf" + open(files[key], "rb").read())
        files[key] = str(path)
    assert main(base_args(files, "--predictor", "last-loss", "--finals", files["finals"])) == 0
    assert capsys.readouterr().out == plain.out


def deep_formula(files, depth):
    doc = {"format": "dimorph-predictor", "version": 1, "feature_order": ["v_last"],
           "tree": "neg(" * depth + "v_last" + ")" * depth}
    return write(files["dir"] / f"deep{depth}.json", json.dumps(doc))


@pytest.mark.parametrize("depth", [101, 250, 1200, 100_000])
def test_deeply_nested_formula_exit_2(files, capsys, depth):
    path = deep_formula(files, depth)
    assert main(base_args(files, "--formula", path)) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"python -m evo.predict: error: {path}: the tree is nested {depth} deep, "
                            f"more than the 100 a predictor may have\n")
    assert captured.out == ""


def test_formula_at_the_depth_limit_runs(files, capsys):
    assert main(base_args(files, "--formula", deep_formula(files, 100))) == 0
    rows = dict(line.split(",") for line in capsys.readouterr().out.splitlines()[1:])
    assert {c: float(v) for c, v in rows.items()} == V_LAST  # 100 negations cancel out


def test_uncompilable_formula_is_a_value_error(monkeypatch, files):
    from primitives import export

    def too_deep(*args):
        raise SyntaxError("too many nested parentheses")

    monkeypatch.setattr(export, "compile_tree", too_deep)
    with pytest.raises(ValueError, match=r"f\.json: the tree cannot be compiled \(SyntaxError: "
                                         r"too many nested parentheses\)"):
        export.load_predictor(formula_file(files, "v_last"))
