import math

import numpy as np
import pytest
from deap import gp

from primitives.baselines import BASELINES, fit_power_law, last_loss, power_law, sotl
from primitives.features import CURVE_FEATURES, curve_features, feature_matrix
from primitives.fitness import calibrate, holdout_mask, kendall_tau, rankdata, spearman
from primitives.pset import BIG, compile_tree, make_pset


def test_kendall_tau_hand_values():
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    # tau-b with a tie in x: 5 concordant of 6 pairs, 5 untied in x, 6 in y
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))
    assert kendall_tau([2, 2, 2], [1, 2, 3]) == 0.0
    assert kendall_tau([1], [1]) == 0.0
    assert kendall_tau([1, np.nan, 2, 3], [1, 5, 2, 3]) == 1.0
    assert kendall_tau([1, 2, 3], [1, np.inf, np.inf]) == pytest.approx(2 / math.sqrt(6))
    with pytest.raises(ValueError, match="same length"):
        kendall_tau([1, 2], [1, 2, 3])


def test_spearman_and_ranks():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [10, 20, 30]) == 1.0
    assert spearman([5, 5], [1, 2]) == 0.0
    assert rankdata([10, 20, 10, 5]).tolist() == [2.5, 4.0, 2.5, 1.0]


def test_holdout_mask_stable_and_fraction():
    keys = [f"arch-{i}" for i in range(3000)]
    mask = holdout_mask(keys)
    assert abs(mask.mean() - 1 / 3) < 0.03
    assert (holdout_mask(keys[:10]) == mask[:10]).all()  # membership ignores archive size
    assert not holdout_mask(keys, frac=0.0).any()
    with pytest.raises(ValueError, match="1.5"):
        holdout_mask(keys, frac=1.5)


def synthetic_records(n=24, seed=0):
    """Curves whose last early val loss tracks the final loss (plus noise)."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        final = 1.5 + rng.uniform(0, 1)
        steps = np.arange(0, 61, 6)
        train = 4.0 - (4.0 - final - 0.6) * np.sqrt(steps / 60)
        v_last = final + 0.5 + rng.normal(0, 0.05)
        f = curve_features(steps, train, [60], [v_last], 60, 600)
        recs.append({"key": f"arch-{i}", "features": f, "target": final})
    return recs


def test_known_good_formula_beats_bad_ones():
    recs = synthetic_records()
    pset = make_pset(CURVE_FEATURES)
    X = feature_matrix(recs, CURVE_FEATURES)
    y = np.array([r["target"] for r in recs])
    split = holdout_mask([r["key"] for r in recs])
    taus = {}
    for text in ("v_last", "neg(v_last)", "0.5"):
        tree = gp.PrimitiveTree.from_string(text, pset)
        p = compile_tree(tree, pset)(X)
        taus[text] = (kendall_tau(p[~split], y[~split]), kendall_tau(p[split], y[split]))
    (good_fit, good_hold), (bad_fit, _), (const_fit, _) = taus["v_last"], taus["neg(v_last)"], taus["0.5"]
    assert good_fit > 0.8 and good_hold > 0.8
    assert bad_fit == -good_fit
    assert const_fit == 0.0
    assert 0 < split.sum() < 24  # both parts hold records


def test_calibrate():
    a, b = calibrate([1.0, 2.0, 3.0, BIG], [5.0, 7.0, 9.0, 100.0])
    assert (a, b) == pytest.approx((2.0, 3.0))
    assert calibrate([1.0, 1.0], [2.0, 4.0]) == (0.0, 3.0)
    with pytest.raises(ValueError, match="finite"):
        calibrate([BIG], [1.0])


def test_baselines_hand_values():
    steps = np.arange(0, 61)
    losses = 2.0 + 3.0 * np.maximum(steps, 1) ** -0.5
    assert last_loss(steps, losses, [30, 60, 90], [2.9, 2.5, 0.1], 60, 600) == 2.5
    assert last_loss(steps, losses, [], [], 60, 600) == losses[60]
    assert sotl(steps, losses, [], [], 30, 600) == pytest.approx(losses[:31].sum())
    assert power_law(steps, losses, [], [], 60, 600) == pytest.approx(2.0 + 3.0 * 600 ** -0.5,
                                                                    abs=0.01)
    a, b, c = fit_power_law(steps[6:].astype(float), losses[6:])
    assert (a, b, c) == pytest.approx((3.0, 0.5, 2.0), abs=0.02)
    rising = 1.0 + 0.01 * steps
    assert power_law(steps, rising, [], [], 60, 600) == rising[60]  # fallback: no decreasing fit
    assert set(BASELINES) == {"last-loss", "sotl", "power-law"}
    with pytest.raises(ValueError, match="two points"):
        last_loss([0, 100], [1.0, 2.0], [], [], 60, 600)


def test_kendall_tau_on_many_points_equals_the_pairwise_count():
    from primitives import fitness
    rng = np.random.default_rng(4)
    n = fitness.FAST_TAU_MIN + 50
    x = rng.integers(0, 40, n).astype(float)
    y = rng.normal(size=n) + 0.05 * x
    x[:5], y[rng.integers(0, n, 20)] = np.inf, 1.0  # ties, infinities included
    dx, dy = fitness._pair_signs(x), fitness._pair_signs(y)
    want = (dx * dy).sum() / np.sqrt(np.count_nonzero(dx) * np.count_nonzero(dy))
    assert kendall_tau(x, y) == pytest.approx(want, abs=1e-12)
    assert kendall_tau(np.ones(n), y) == 0.0
