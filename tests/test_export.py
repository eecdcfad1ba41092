import json
import random
import re

import numpy as np
import pytest
import sympy
from deap import gp

from primitives.export import (CHECK_RTOL, export_predictor, load_predictor, plain_sympy,
                               simplify_expr, sympy_callable, text_predictions, to_sympy)
from primitives.features import CURVE_FEATURES
from primitives.gp import tree_from_string
from primitives.pset import SYMPY_OPS, compile_tree, finite_predictions, make_pset

NAMES = list(CURVE_FEATURES)


@pytest.fixture(scope="module")
def pset():
    return make_pset(NAMES)


def sympy_predictions(expr, X):
    with np.errstate(all="ignore"):
        y = sympy_callable(expr, NAMES)(*X.T)
    return finite_predictions(y, X.shape[0])


def test_round_trip_500_random_trees(pset):
    random.seed(0)
    rng = np.random.default_rng(0)
    X = rng.normal(0.0, 2.0, size=(16, len(NAMES)))
    for _ in range(500):
        tree = gp.PrimitiveTree(gp.genHalfAndHalf(pset, min_=1, max_=6))
        want = compile_tree(tree, pset)(X)
        assert np.isfinite(want).all()
        got_sympy = sympy_predictions(to_sympy(tree, pset), X)
        np.testing.assert_allclose(got_sympy, want, rtol=1e-9, atol=0, err_msg=str(tree))
        loaded = tree_from_string(str(tree), pset)
        assert str(loaded) == str(tree)
        np.testing.assert_array_equal(compile_tree(loaded, pset)(X), want)


def test_to_sympy_equals_sympify_of_tree_text(pset):
    random.seed(2)
    symbols = {n: sympy.Symbol(n, real=True) for n in NAMES}
    for _ in range(20):
        tree = gp.PrimitiveTree(gp.genHalfAndHalf(pset, min_=1, max_=4))
        assert to_sympy(tree, pset) == sympy.sympify(str(tree), locals={**symbols, **SYMPY_OPS})


def test_simplified_export_and_loaded_predictor_agree(pset, tmp_path):
    random.seed(1)
    rng = np.random.default_rng(1)
    X = rng.normal(0.0, 2.0, size=(16, len(NAMES)))
    for i in range(4):  # simplify is slow: a handful of trees
        tree = gp.PrimitiveTree(gp.genHalfAndHalf(pset, min_=2, max_=3))
        want = compile_tree(tree, pset)(X)
        simplified = simplify_expr(to_sympy(tree, pset), len(tree))
        np.testing.assert_allclose(sympy_predictions(simplified, X), want, rtol=1e-9)
        doc = export_predictor(tree, pset, meta={"tau": 0.5})
        path = tmp_path / f"p{i}.json"
        path.write_text(json.dumps(doc))
        pred = load_predictor(path)
        cols = [NAMES.index(n) for n in pred.features]
        np.testing.assert_allclose(pred(X[:, cols]), want, rtol=1e-12)
        row = {n: float(X[0, NAMES.index(n)]) for n in pred.features}
        assert pred(row) == pytest.approx(want[0], rel=1e-12)
        assert pred.meta == {"tau": 0.5}


def test_export_document(pset):
    tree = tree_from_string("sub(v_last, mul(0.5, s25_50))", pset)
    doc = export_predictor(tree, pset, meta={"gen": 3})
    assert doc["format"] == "dimorph-predictor" and doc["version"] == 2
    assert doc["round_digits"] == 6 and doc["sympy_checked"] is True
    assert "calibration" not in doc and "fitted_at" not in doc
    assert doc["tree"] == "sub(v_last, mul(0.5, s25_50))"
    assert doc["sympy"] == "-0.5*s25_50 + v_last"
    assert doc["features"] == ["s25_50", "v_last"]  # pset order
    assert doc["feature_order"] == NAMES
    assert "v_{last}" in doc["latex"]
    json.dumps(doc)
    pred = load_predictor(doc)
    assert pred({"v_last": 2.0, "s25_50": -1.0}) == 2.5
    assert pred({"v_last": np.array([2.0, 3.0]), "s25_50": 0.0}).tolist() == [2.0, 3.0]
    with pytest.raises(ValueError, match="'v_last'"):
        pred({"s25_50": 1.0})
    with pytest.raises(ValueError, match="matrix"):
        pred(np.ones((2, 3)))


def test_protected_div_exports_symbolically(pset):
    tree = tree_from_string("protected_div(l50, sub(l25, l25))", pset)
    doc = export_predictor(tree, pset)
    assert doc["sympy"] == "1"  # divisor simplifies to 0 -> protected value 1
    tree = tree_from_string("protected_div(l50, l25)", pset)
    assert export_predictor(tree, pset)["sympy"] == "Piecewise((1, Abs(l25) < 1.0e-6), (l50/l25, True))"


def test_tree_from_string_rejects_unsafe_text(pset, tmp_path):
    marker = tmp_path / "x"
    for text in (f"__import__('os').system('touch {marker}')",
                 "add(v_last, os.system)", "add(v_last, 'a')", "add(v_last, nope)",
                 "add(v_last; l0)", "add(v_last)", "add(v_last, l0, l0)", "v_last l0",
                 "pred_const", "add(v_last, inf)", "", "neg(1e999)"):
        with pytest.raises(ValueError):
            tree_from_string(text, pset)
    assert not marker.exists()
    with pytest.raises(ValueError, match="__import__"):
        tree_from_string("__import__('os')", pset)


def test_tree_from_string_constants_stay_mutable(pset):
    tree = tree_from_string("add(-0.25, mul(v_last, 1e-3))", pset)
    assert str(tree) == "add(-0.25, mul(v_last, 0.001))"
    random.seed(0)
    (mutated,) = gp.mutEphemeral(tree, mode="all")
    assert str(mutated) != "add(-0.25, mul(v_last, 0.001))"


def test_load_predictor_refuses_foreign_files(pset, tmp_path):
    marker = tmp_path / "x"
    evil = f"__import__('os').system('touch {marker}')"
    good = export_predictor(tree_from_string("neg(v_last)", pset), pset, simplify=False)
    variants = {
        "tree": {**good, "tree": evil},
        "sympy": {**good, "sympy": evil},
        "format": {**good, "format": "other"},
        "version": {**good, "version": 3},
        "features": {**good, "features": ["l0"]},
        "feature_order": {**good, "feature_order": ["__class__.mro"]},
        "meta": {**good, "meta": [1]},
    }
    for field, doc in variants.items():
        path = tmp_path / f"{field}.json"
        path.write_text(json.dumps(doc))
        with pytest.raises(ValueError, match=str(path)):
            load_predictor(path)
    assert not marker.exists()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_predictor(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="unknown name '__import__'"):
        load_predictor({**good, "sympy": evil})
    assert load_predictor(good).features == ["v_last"]


# -- standard sympy export: any tool reproduces the predictions without Dimorph -------------------
SYMPY_ONLY = """
import json, sys
import numpy as np, sympy
doc = json.load(open(sys.argv[1]))
X = np.array(json.load(open(sys.argv[2])), dtype=float)
f = sympy.lambdify([sympy.Symbol(n) for n in doc["features"]], sympy.sympify(doc["sympy"]), "numpy")
with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    y = np.broadcast_to(np.asarray(f(*X.T), dtype=float), (len(X),))
assert not {"evo", "primitives", "deap"} & set(sys.modules), sorted(sys.modules)
print(json.dumps(y.tolist()))
"""
# nested protected divisions (one in a divisor), a calibration with many digits, exp and sqrt
PLAIN_TREES = [
    ("sub(v_last, mul(0.5, s25_50))", None),
    ("protected_div(l50, sub(l25, l10))", (0.812345678, 0.123456789)),
    ("protected_div(v_last, protected_div(l75, sub(l10, l25)))", (1.5, -0.25)),
    ("add(pexp(mul(0.123, l0)), plog(protected_div(v_last, sub(l10, 0.3))))", (0.7, 1.1)),
    ("mul(psqrt(sub(s50_75, l100)), psqrt(pmin(v_last, sotl)))", (2.0, 0.5)),
    ("pmax(psqrt(protected_div(drop, gap)), pmin(l25, mul(curv50, -0.651)))", None),
]


def feature_rows(n=40, seed=3):
    """Rows shaped like real features (levels around 2-4, small slopes, a zero divisor now and then)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 1.0, size=(n, len(NAMES)))
    for i, name in enumerate(NAMES):
        if name.startswith("l") or name in ("v_last", "sotl"):
            X[:, i] = rng.uniform(2.0, 4.0, n)
    X[::7, NAMES.index("l10")] = X[::7, NAMES.index("l25")]  # l25 - l10 == 0: the protected branch
    return X


@pytest.mark.slow
def test_plain_sympy_text_reproduces_predictions_in_a_sympy_only_process(pset, tmp_path):
    import subprocess
    import sys

    X = feature_rows()
    for k, (text, cal) in enumerate(PLAIN_TREES):
        doc = export_predictor(tree_from_string(text, pset), pset, calibration=cal,
                               early_steps=60, full_steps=600)
        assert "ProtectedDiv" not in doc["sympy"] and doc["round_digits"] == 6
        for number in re.findall(r"\d+\.\d+(?:e-?\d+)?", doc["sympy"]):
            mantissa = number.split("e")[0].replace(".", "").lstrip("0")
            assert len(mantissa) <= 6, (number, doc["sympy"])
        path = tmp_path / f"p{k}.json"
        path.write_text(json.dumps(doc))
        pred = load_predictor(path)
        cols = X[:, [NAMES.index(n) for n in pred.features]]
        (tmp_path / "x.json").write_text(json.dumps(cols.tolist()))
        run = subprocess.run([sys.executable, "-I", "-c", SYMPY_ONLY, str(path), str(tmp_path / "x.json")],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert "Warning" not in run.stderr
        got, want = np.array(json.loads(run.stdout)), pred(cols)
        assert np.isfinite(want).all() and np.abs(want).max() < 1e6
        scale = np.maximum(np.abs(want), np.median(np.abs(want)))
        assert (np.abs(got - want) <= CHECK_RTOL * scale).all(), (text, doc["sympy"], got, want)


def test_protected_branch_matches_the_tree(pset):
    tree = tree_from_string("protected_div(l50, sub(l25, l10))", pset)
    doc = export_predictor(tree, pset)
    X = np.zeros((3, len(NAMES)))
    X[:, NAMES.index("l50")] = [3.0, 3.0, 3.0]
    X[:, NAMES.index("l25")] = [2.0, 2.0, 2.5]
    X[:, NAMES.index("l10")] = [2.0, 2.0 - 1e-7, 1.0]  # divisor 0, below DIV_EPS, 1.5
    np.testing.assert_array_equal(compile_tree(tree, pset)(X), [1.0, 1.0, 2.0])
    np.testing.assert_allclose(text_predictions(doc["sympy"], NAMES, X), [1.0, 1.0, 2.0], rtol=1e-15)


def test_calibration_rounded_and_applied(pset):
    tree = tree_from_string("sub(v_last, mul(0.5, s25_50))", pset)
    doc = export_predictor(tree, pset, calibration={"a": 0.123456789, "b": 2.00000049})
    assert doc["calibration"] == {"a": 0.123457, "b": 2.0}
    assert doc["sympy"] == "-0.0617285*s25_50 + 0.123457*v_last + 2"
    pred = load_predictor(doc)
    assert pred({"v_last": 3.0, "s25_50": -1.0}) == pytest.approx(0.123457 * 3.5 + 2.0, rel=1e-15)
    for bad in ({"a": 0.0, "b": 1.0}, {"a": -1.0, "b": 1.0}, {"a": float("nan"), "b": 1.0}, {"a": 1.0}):
        with pytest.raises(ValueError, match="calibration"):
            export_predictor(tree, pset, calibration=bad)
        with pytest.raises(ValueError, match="calibration"):
            load_predictor({**doc, "calibration": bad})


def test_simplification_that_numpy_cannot_evaluate_is_not_exported(pset):
    """simplify turns sqrt(|a|)*sqrt(|b|) into |sqrt(a*b)|-like forms, NaN in numpy for a < 0:
    the export keeps the unsimplified formula then, which numpy evaluates as the tree."""
    tree = tree_from_string("mul(psqrt(sub(s50_75, l100)), psqrt(pmin(v_last, sotl)))", pset)
    X = feature_rows()
    X[::2, NAMES.index("s50_75")] = 5.0  # l100 - s50_75 < 0 in every other row
    want = compile_tree(tree, pset)(X)
    simplified = str(plain_sympy(simplify_expr(to_sympy(tree, pset), len(tree))))
    assert not np.allclose(text_predictions(simplified, NAMES, X), want)
    doc = export_predictor(tree, pset)
    np.testing.assert_allclose(text_predictions(doc["sympy"], NAMES, X), want, rtol=1e-12)


def test_constants_that_six_digits_cannot_carry_keep_more(pset):
    """exp(2.70472...*s10_25) near exp(12): 6 digits of the folded constant move it by ~2e-5."""
    tree = tree_from_string("pexp(pmax(plog(neg(s25_50)), mul(pexp(0.995), s10_25)))", pset)
    doc = export_predictor(tree, pset)
    assert doc["round_digits"] > 6
    X = feature_rows()
    X[:, NAMES.index("s10_25")] = np.linspace(2.0, 4.5, len(X))
    np.testing.assert_allclose(text_predictions(doc["sympy"], NAMES, X), compile_tree(tree, pset)(X),
                               rtol=CHECK_RTOL)


def test_fitted_at_recorded_and_version_1_files_still_load(pset, tmp_path):
    tree = tree_from_string("protected_div(l50, l25)", pset)
    doc = export_predictor(tree, pset, early_steps=60, full_steps=600)
    assert doc["fitted_at"] == {"early_steps": 60, "full_steps": 600, "early_frac": 0.1}
    assert load_predictor(doc).fitted_at == doc["fitted_at"]
    from_meta = export_predictor(tree, pset, meta={"early_steps": 6, "full_steps": 30})
    assert from_meta["fitted_at"]["early_frac"] == 0.2
    with pytest.raises(ValueError, match="fitted_at"):
        export_predictor(tree, pset, early_steps=60, full_steps=30)
    # a file the version 1 exporter wrote: ProtectedDiv in the sympy text, budgets in meta
    old = {"format": "dimorph-predictor", "version": 1, "tree": "protected_div(l50, l25)",
           "sympy": "ProtectedDiv(l50, l25)", "latex": r"\operatorname{ProtectedDiv}{\left(l_{50},l_{25} \right)}",
           "features": ["l25", "l50"], "feature_order": NAMES,
           "meta": {"rank": 0, "early_steps": 60, "full_steps": 600}}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    pred = load_predictor(path)
    assert pred.calibration is None and pred.fitted_at["early_frac"] == 0.1
    assert pred({"l50": 3.0, "l25": 2.0}) == 1.5 and pred({"l50": 3.0, "l25": 0.0}) == 1.0
    with pytest.raises(ValueError, match=r"unsupported version 3 \(this Dimorph reads dimorph-predictor "
                                         r"versions 1, 2\)"):
        load_predictor({**old, "version": 3})


def test_predict_warns_when_the_early_fraction_differs(pset, tmp_path, capsys):
    from evo.predict import main as predict_main

    rows = ["curve_id,step,split,loss"]
    for cid, v in (("a", 2.0), ("b", 3.0)):
        rows += [f"{cid},{s},train,{4 - s / 100}" for s in range(0, 61, 5)] + [f"{cid},60,val,{v}"]
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    doc = export_predictor(tree_from_string("v_last", pset), pset, early_steps=60, full_steps=600)
    (tmp_path / "f.json").write_text(json.dumps(doc))
    base = ["--curves", str(tmp_path / "c.csv"), "--formula", str(tmp_path / "f.json")]
    assert predict_main(base + ["--early-steps", "30", "--full-steps", "600"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "60/600 (fraction 0.1)" in err and "30/600 (0.05)" in err
    assert predict_main(base + ["--early-steps", "6", "--full-steps", "60"]) == 0
    assert capsys.readouterr().err == ""


def test_a_text_that_fails_the_check_is_marked(pset, monkeypatch):
    from primitives import export

    monkeypatch.setattr(export, "_reproduces", lambda *args: False)
    doc = export_predictor(tree_from_string("protected_div(l50, sub(l25, l10))", pset), pset)
    assert doc["sympy_checked"] is False and doc["round_digits"] == 17
    assert doc["sympy"] == "Piecewise((1, Abs(l10 - l25) < 1.0e-6), (l50/(-l10 + l25), True))"
    assert load_predictor(doc)({"l50": 3.0, "l25": 2.0, "l10": 1.0}) == 3.0
