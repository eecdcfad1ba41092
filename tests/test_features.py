import math

import numpy as np
import pytest

from primitives.features import (ALL_FEATURES, ARCH_FEATURES, CURVE_FEATURES, curve_features,
                                 feature_matrix)

E, F = 100, 1000


def linear_curve():
    steps = np.arange(0, E + 1)
    return steps, 4.0 - 2.0 * steps / E  # 4 -> 2 over the early budget


def test_linear_curve_hand_values():
    s, v = linear_curve()
    f = curve_features(s, v, [], [], E, F)
    assert set(f) == set(CURVE_FEATURES)
    expect = {"l0": 4.0, "l10": 3.8, "l25": 3.5, "l50": 3.0, "l75": 2.5, "l100": 2.0,
              "s10_25": -2.0, "s25_50": -2.0, "s50_75": -2.0, "s75_100": -2.0,
              "curv50": 0.0, "curv75": 0.0, "drop": 2.0, "rel_drop": 0.5,
              "v_last": 2.0, "gap": 0.0, "sotl": 3.0, "early_frac": 0.1}
    for name, value in expect.items():
        assert f[name] == pytest.approx(value, abs=1e-12), name
    fr = np.array([0.1, 0.25, 0.5, 0.75, 1.0])
    slope = np.polyfit(np.log(fr), np.log(4.0 - 2.0 * fr), 1)[0]
    assert f["loglog_slope"] == pytest.approx(slope, rel=1e-9)
    # no validation point: v_last is l100 and the exponent is the training curve's
    assert f["v_pow2"] == pytest.approx(2.0 * 2.0 ** slope, rel=1e-12)


def test_power_law_exponent_recovered_exactly():
    steps = [0, 10, 25, 50, 75, 100]  # one point per smoothing window
    losses = [9.0] + [3.0 * (s / E) ** -0.5 for s in steps[1:]]
    f = curve_features(steps, losses, [], [], E, F)
    assert f["loglog_slope"] == pytest.approx(-0.5, abs=1e-10)
    assert f["l25"] == pytest.approx(6.0)
    assert f["s25_50"] == pytest.approx((3.0 * 2 ** 0.5 - 6.0) / 0.25)


def test_v_pow2_of_a_power_law_validation_curve():
    s, v = linear_curve()
    # step 0 and step 5 (< 0.1 E) are left out of the exponent; 200 is past E
    val_s = [0, 5, 10, 25, 50, 100, 200]
    val_v = [9.0, 7.0] + [3.0 * (t / E) ** -0.5 for t in (10, 25, 50, 100)] + [0.1]
    f = curve_features(s, v, val_s, val_v, E, F)
    assert f["v_last"] == pytest.approx(3.0)
    assert f["v_pow2"] == pytest.approx(3.0 * 2.0 ** -0.5, rel=1e-12)


def test_v_pow2_falls_back_to_the_training_exponent():
    s, v = linear_curve()
    train_only = curve_features(s, v, [], [], E, F)
    # one validation point at or past 0.1 E: v_last from it, exponent from the training curve
    f = curve_features(s, v, [0, 5, 80], [4.0, 3.9, 2.5], E, F)
    assert f["v_last"] == 2.5
    assert f["v_pow2"] == pytest.approx(2.5 * 2.0 ** train_only["loglog_slope"], rel=1e-12)


def test_v_pow2_exponent_is_clipped():
    s, v = linear_curve()
    # exponent ln(1e20) / ln(100/99) ~ 4600: clipped to 10
    f = curve_features(s, v, [99, 100], [1e-10, 1e10], E, F)
    assert f["v_pow2"] == pytest.approx(1e10 * 2.0 ** 10, rel=1e-12)
    g = curve_features(s, v, [99, 100], [1e10, 1e-10], E, F)
    assert g["v_pow2"] == pytest.approx(1e-10 * 2.0 ** -10, rel=1e-12)


def test_only_early_points_order_free_and_val():
    s, v = linear_curve()
    late = np.arange(E + 1, 3 * E)
    s2 = np.concatenate([late, s[::-1]])
    v2 = np.concatenate([np.full(late.size, 99.0), v[::-1]])
    val_s, val_v = [100, 50, 150], [2.3, 3.1, 0.1]
    f1 = curve_features(s, v, val_s, val_v, E, F)
    f2 = curve_features(s2, v2, val_s, val_v, E, F)
    assert f1 == f2
    assert f1["v_last"] == 2.3
    assert f1["gap"] == pytest.approx(0.3)


def test_smoothing_of_a_noisy_curve():
    s, v = linear_curve()
    noisy = v + np.where(s % 2 == 0, 0.1, -0.1)
    f = curve_features(s, noisy, [], [], E, F)
    assert noisy[50] == pytest.approx(3.1)
    assert abs(f["l50"] - 3.0) < 0.02
    assert abs(f["l25"] - 3.5) < 0.02


@pytest.mark.parametrize("steps,losses", [
    ([0, 1], [4.0, 4.0]),                      # two points, constant
    ([0, 0, 5], [1.0, 3.0, 2.0]),              # duplicate step 0
    ([7, 7], [2.0, 2.0]),                      # one distinct step
    (list(range(101)), [1.0 + 0.01 * i for i in range(101)]),   # rising
    (list(range(101)), [50.0 if i % 17 == 0 else 2.0 for i in range(101)]),  # spiky
    ([0, 50, 100], [0.0, 0.0, 0.0]),           # zero loss
    ([0, 50, 100], [1e30, -1e30, 1e-300]),     # extreme values
    ([100, 3], [-2.0, 5.0]),                   # unsorted, negative loss
])
def test_every_feature_finite(steps, losses):
    f = curve_features(steps, losses, [], [], E, F, n_params=1e6, lr=1e-3)
    assert set(f) == set(ALL_FEATURES)
    assert all(math.isfinite(x) for x in f.values()), f


@pytest.mark.parametrize("val_steps,val_losses", [
    ([0], [4.0]),                              # step 0 only
    ([10, 100], [0.0, 0.0]),                   # zero loss
    ([10, 50, 100], [1e30, -1e30, 1e-300]),    # extreme values
    ([100, 10, 10], [-2.0, 5.0, 1.0]),         # unsorted, duplicate, negative
    ([99, 100], [1e-300, 1e99]),               # huge exponent
])
def test_every_feature_finite_with_validation_points(val_steps, val_losses):
    s, v = linear_curve()
    f = curve_features(s, v, val_steps, val_losses, E, F)
    assert all(math.isfinite(x) for x in f.values()), f


def test_arch_features_optional():
    s, v = linear_curve()
    f = curve_features(s, v, [], [], E, F, n_params=1e6, lr=1e-3)
    assert f["log_params"] == pytest.approx(math.log(1e6))
    assert f["log_lr"] == pytest.approx(math.log(1e-3))
    g = curve_features(s, v, [], [], E, F, lr=1e-3)
    assert "log_params" not in g and set(ARCH_FEATURES) & set(g) == {"log_lr"}


@pytest.mark.parametrize("kwargs,match", [
    (dict(train_steps=[0, 200], train_losses=[1.0, 2.0]), "two points"),
    (dict(train_steps=[0, -1], train_losses=[1.0, 2.0]), "non-negative integers"),
    (dict(train_steps=[0, 1.5], train_losses=[1.0, 2.0]), "non-negative integers"),
    (dict(train_steps=[0, 1], train_losses=[1.0, float("nan")]), "finite"),
    (dict(train_steps=[0, 1], train_losses=[1.0]), "equal length"),
    (dict(n_params=0.0), "n_params"),
    (dict(lr=-1e-3), "lr"),
    (dict(early_steps=0), "early_steps"),
    (dict(full_steps=50), "full_steps"),
])
def test_bad_input_raises(kwargs, match):
    args = dict(train_steps=[0, 1, 2], train_losses=[3.0, 2.0, 1.0], val_steps=[], val_losses=[],
                early_steps=E, full_steps=F)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        curve_features(**args)


def test_feature_matrix():
    recs = [{"a": 1.0, "b": 2.0}, {"features": {"a": 3.0, "b": 4.0, "c": 9.0}}]
    X = feature_matrix(recs, ["b", "a"])
    assert X.tolist() == [[2.0, 1.0], [4.0, 3.0]]
    assert feature_matrix([], ["a"]).shape == (0, 1)
    with pytest.raises(ValueError, match="'c'"):
        feature_matrix(recs, ["c"])
