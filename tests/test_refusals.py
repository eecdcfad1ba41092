"""Inputs that used to give a silently wrong answer, a traceback or no end: each is refused in one
line that names the bad value (issue: reliability, third pass)."""
import json

import pytest

from tests.table_helpers import make_table


def test_a_table_baseline_that_is_no_row_is_refused(tmp_path):
    from evo.table import TableError, load_table

    d = make_table(tmp_path / "t", n=8)
    meta = json.loads((d / "table.json").read_text())
    (d / "table.json").write_text(json.dumps({**meta, "baseline": "zzz"}))
    with pytest.raises(TableError, match=r"table.json: baseline 'zzz' is not an arch_id of archs.csv"):
        load_table(str(d))
    (d / "table.json").write_text(json.dumps({**meta, "baseline": "x3"}))
    assert load_table.__wrapped__(str(d)).space().baseline == load_table.__wrapped__(str(d)).space().row_genes[3]


def test_models_train_refuses_zero_steps(capsys):
    from models.train import main

    with pytest.raises(SystemExit) as e:
        main(["--steps", "0", "--no-inference"])
    assert e.value.code == 2 and "--steps must be >= 1, got 0" in capsys.readouterr().err


def test_a_table_experiment_refuses_budgets_past_the_table(tmp_path, capsys):
    from evo.experiment import cli

    d = make_table(tmp_path / "t", n=12)
    for budgets in ("1e308", "50000", "10,13"):
        assert cli(["--table", str(d), "--seeds", "1", "--budgets", budgets, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert "more than the table's 12 architectures trained once each" in err and len(err.splitlines()) == 1


@pytest.fixture
def curves(tmp_path):
    rows = ["curve_id,step,split,loss"]
    for cid, v in (("a", 2.0), ("b", 2.5), ("c", 3.0)):
        rows += [f"{cid},{s},train,{4.0 - s / 100}" for s in range(0, 61, 10)]
        rows += [f"{cid},30,val,3.9", f"{cid},60,val,{v}"]
    p = tmp_path / "curves.csv"
    p.write_text("\n".join(rows) + "\n")
    return p


def test_evo_predict_refuses_a_formula_that_overflows(curves, tmp_path, capsys):
    from evo.predict import main
    from primitives.export import export_predictor
    from primitives.features import ALL_FEATURES
    from primitives.gp import tree_from_string
    from primitives.pset import make_pset

    pset = make_pset(ALL_FEATURES)
    big = "mul(pexp(mul(v_last, 10.0)), pexp(mul(v_last, 10.0)))"  # e^20 squared: clipped inside, not above
    huge = f"mul({big}, mul({big}, {big}))"  # (e^40)^3 = 1.5e52: past the range
    for text, ok in ((big, True), (huge, False)):
        f = tmp_path / "f.json"
        f.write_text(json.dumps(export_predictor(tree_from_string(text, pset), pset, simplify=False)))
        code = main(["--curves", str(curves), "--early-steps", "60", "--full-steps", "600", "--formula", str(f)])
        err = capsys.readouterr().err
        assert code == (0 if ok else 2)
        if not ok:
            assert "the formula overflows on curve 'a'" in err and len(err.strip().splitlines()) == 1


def test_evo_predict_names_the_line_of_a_non_utf8_byte(curves, capsys):
    from evo.predict import main

    data = curves.read_bytes().splitlines(keepends=True)
    data[5] = data[5].replace(b"train", b"tr\xe9in")
    curves.write_bytes(b"".join(data))
    col = data[5].index(b"\xe9") + 1
    assert main(["--curves", str(curves), "--early-steps", "60", "--full-steps", "600",
                 "--predictor", "last-loss"]) == 2
    err = capsys.readouterr().err
    assert f"{curves}:6: not UTF-8 text (byte {col} of the line)" in err


def test_evo_fit_with_all_finals_equal_is_one_line(tmp_path, capsys):
    from evo.fit import main

    d = make_table(tmp_path / "t", n=20, full=100, early=10)
    ids = [line.split(",")[0] for line in (d / "archs.csv").read_text().splitlines()[1:]]
    finals = tmp_path / "finals.csv"
    finals.write_text("curve_id,final_loss\n" + "".join(f"{c},1.5\n" for c in ids))
    code = main(["--curves", str(d / "curves.csv"), "--finals", str(finals), "--early-steps", "10",
                 "--full-steps", "100", "--out", str(tmp_path / "o"), "--pop", "8", "--gens", "1", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "are all equal (1.5): there is no ranking to learn" in err[0]


def test_ctrl_c_in_evo_fit_is_one_line(tmp_path, capsys, monkeypatch):
    import evo.females
    from evo.fit import main

    d = make_table(tmp_path / "t", n=20, full=100, early=10)
    finals = tmp_path / "finals.csv"
    finals.write_text("curve_id,final_loss\n" + "".join(
        f"{line.split(',')[0]},{1 + i / 10}\n" for i, line in enumerate((d / "archs.csv").read_text().splitlines()[1:])))

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(evo.females.Females, "evolve", interrupted)
    code = main(["--curves", str(d / "curves.csv"), "--finals", str(finals), "--early-steps", "10",
                 "--full-steps", "100", "--out", str(tmp_path / "o"), "--pop", "8", "--gens", "2", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and len(err) == 1 and err[0].startswith("python -m evo.fit: interrupted")
    assert not (tmp_path / "o" / "predictor.json").exists()
