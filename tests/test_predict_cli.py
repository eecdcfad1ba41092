import json
import math
import random

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
