"""primitives.ensemble: blends that stay one formula, the accuracy-against-size front, the
residual interval."""
import random

import numpy as np
import pytest

from evo.females import Females
from evo.ledger import records_from_rows
from primitives import ensemble
from primitives.export import export_predictor, load_predictor, text_predictions
from primitives.gp import tree_from_string
from primitives.pset import compile_tree


def test_nnls_weights_recover_a_non_negative_mix():
    rng = np.random.default_rng(0)
    P = rng.normal(size=(60, 3))
    y = 2.0 * P[:, 0] + 0.5 * P[:, 1] - 1.5 * P[:, 2] + 3.0  # the third weight would be negative
    w, c = ensemble.nnls_weights(P, y)
    assert w[2] == 0.0 and (w >= 0).all()
    # with the third column excluded, the first two are recovered up to the third's leakage
    w2, c2 = ensemble.nnls_weights(P[:, :2], 2.0 * P[:, 0] + 0.5 * P[:, 1] + 3.0)
    assert w2 == pytest.approx([2.0, 0.5], abs=1e-9) and c2 == pytest.approx(3.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"\(n, k >= 1\)"):
        ensemble.nnls_weights(np.zeros((5, 0)), np.zeros(5))


def test_blend_and_median_texts_are_trees_of_the_primitive_set():
    fem = Females()
    X = np.random.default_rng(1).uniform(0.5, 3.0, size=(25, len(fem.features)))
    col = {n: X[:, i] for i, n in enumerate(fem.features)}
    texts = ["v_last", "mul(l75, v_pow2)", "psqrt(l50)"]
    tree = tree_from_string(ensemble.blend_text(texts, [0.25, 0.0, 1.5], -0.125), fem.pset)
    assert str(tree).count("mul(") == 2  # the zero-weight member is left out
    want = 0.25 * col["v_last"] + 1.5 * np.sqrt(col["l50"]) - 0.125
    assert compile_tree(tree, fem.pset)(X) == pytest.approx(want, rel=1e-12)
    cals = [(1.0, 0.0), (2.0, -1.0), (0.5, 0.25)]
    med = tree_from_string(ensemble.median3_text(texts, cals), fem.pset)
    parts = np.stack([col["v_last"], 2.0 * col["l75"] * col["v_pow2"] - 1.0, 0.5 * np.sqrt(col["l50"]) + 0.25])
    assert compile_tree(med, fem.pset)(X) == pytest.approx(np.median(parts, axis=0), rel=1e-12)
    with pytest.raises(ValueError, match="positive weight"):
        ensemble.blend_text(texts, [0.0, 0.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="exactly 3"):
        ensemble.median3_text(texts[:2], cals[:2])


def _archive(n=80, seed=0):
    """Records whose target is v_last + l75 on independent features: neither alone ranks it well."""
    rng = np.random.default_rng(seed)
    fem = Females()
    rows = []
    for i in range(n):
        f = {name: float(rng.uniform(1, 2)) for name in fem.features}
        rows.append({"key": f"a{i}", "target": f["v_last"] + f["l75"], "features": f})
    return records_from_rows(rows)


def test_choose_takes_a_blend_only_when_it_beats_the_champion_on_both_parts():
    random.seed(0)
    archive = _archive()
    fem = Females()
    fem.pop = fem.from_strings(["v_last", "l75", "l50", "neg(s10_25)", "gap"])
    fem.score(fem.pop, archive)
    out = ensemble.choose(fem, archive, "nnls")
    assert out["is_blend"] and out["blend"]["kind"] == "nnls"
    assert {m["tree"] for m in out["blend"]["members"]} >= {"v_last", "l75"}
    fit, held = out["scores"]["blend"]
    assert fit > 0.99 and held > 0.99 and out["scores"]["champion"][0] < 0.8
    # one formula: the export's sympy text reproduces the blend's predictions
    doc = export_predictor(out["tree"], fem.pset, calibration=(1.0, 0.0))
    X = np.array([[r.features[n] for n in fem.features] for r in archive])
    got = text_predictions(doc["sympy"], fem.pset.arguments, X)
    assert got == pytest.approx(fem.raw(out["tree"], archive), rel=1e-5)
    assert load_predictor(doc)(X[:, [fem.features.index(n) for n in doc["features"]]]) == \
        pytest.approx(got, rel=1e-5)
    # a population with one distinct formula has nothing to blend: the champion stays
    fem.pop = fem.from_strings(["v_last", "mul(v_last, 1.0)"])
    fem.score(fem.pop, archive)
    same = ensemble.choose(fem, archive)
    assert not same["is_blend"] and str(same["tree"]) == "v_last" and same["blend"] is None


def test_pareto_front_keeps_only_the_undominated():
    entries = [{"size": 1, "score": 0.5}, {"size": 3, "score": 0.6}, {"size": 3, "score": 0.55},
               {"size": 5, "score": 0.58}, {"size": 7, "score": 0.7}, {"size": 9, "score": float("nan")},
               {"size": 2, "score": 0.5}]
    front = ensemble.pareto_front(entries)
    assert [(e["size"], e["score"]) for e in front] == [(1, 0.5), (3, 0.6), (7, 0.7)]


def test_front_of_a_population_orders_by_size():
    archive = _archive()
    fem = Females()
    fem.pop = fem.from_strings(["v_last", "add(v_last, l75)", "add(add(v_last, l75), mul(0.0, gap))",
                                "l50"])
    fem.score(fem.pop, archive)
    front = ensemble.front(fem, archive)
    assert [e["tree"] for e in front] == ["v_last", "add(v_last, l75)"]
    assert front[1]["tau"] == pytest.approx(1.0) and front[0]["size"] == 1


def test_residual_interval_and_coverage():
    y = np.arange(11, dtype=float)
    iv = ensemble.residual_interval(np.zeros(11), y, level=0.8)
    assert (iv["lo"], iv["hi"], iv["n"]) == (pytest.approx(1.0), pytest.approx(9.0), 11)
    assert ensemble.coverage(np.zeros(11), y, iv) == pytest.approx(9 / 11)
    with pytest.raises(ValueError, match="level"):
        ensemble.residual_interval(np.zeros(3), np.ones(3), level=1.5)
    with pytest.raises(ValueError, match="at least 2"):
        ensemble.residual_interval([0.0], [1.0])


def test_tau_ci_brackets_the_tau():
    y = np.arange(30, dtype=float)
    assert ensemble.tau_ci(y, y) == [1.0, 1.0]
    noisy = y + np.random.default_rng(3).normal(scale=8.0, size=30)
    lo, hi = ensemble.tau_ci(noisy, y, seed=1)
    from primitives.fitness import kendall_tau
    assert lo < kendall_tau(noisy, y) < hi and hi - lo > 0.05
