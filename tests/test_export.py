import json
import random

import numpy as np
import pytest
import sympy
from deap import gp

from primitives.export import (export_predictor, load_predictor, simplify_expr,
                               sympy_callable, to_sympy)
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
    assert doc["format"] == "dimorph-predictor" and doc["version"] == 1
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
    assert export_predictor(tree, pset)["sympy"] == "ProtectedDiv(l50, l25)"


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
        "version": {**good, "version": 2},
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
