import math
import random
import warnings

import numpy as np
import pytest
import sympy
from deap import creator, gp

import primitives.pset as P
from primitives.gp import make_pred_toolbox
from primitives.pset import (BIG, PRIMITIVES, SYMPY_OPS, compile_tree, ensure_pred_types,
                             make_pset)

NAMES = ["v_last", "s25_50", "l0"]
EXTREME = np.array([0.0, 1e30, -1e30, 1e-300, -1e-300, 5e-7, -3.0, 2.5])


@pytest.fixture(scope="module")
def pset():
    return make_pset(NAMES)


def test_every_primitive_has_a_sympy_twin(pset):
    in_pset = {p.name for prims in pset.primitives.values() for p in prims}
    assert in_pset == set(PRIMITIVES)
    missing = in_pset - set(SYMPY_OPS)
    assert not missing, f"primitives without a sympy twin: {missing}"


def test_primitive_values():
    assert P.protected_div(1.0, 0.0) == 1.0
    assert P.protected_div(3.0, 1e-7) == 1.0
    assert P.protected_div(1.0, 4.0) == 0.25
    assert P.plog(0.0) == pytest.approx(math.log(1e-6))
    assert P.plog(-math.e) == pytest.approx(1.0, abs=1e-6)
    assert P.pexp(100.0) == pytest.approx(math.exp(20.0))
    assert P.pexp(-1e30) == 0.0
    assert P.psqrt(-4.0) == 2.0
    assert P.pmin(2.0, -1.0) == -1.0 and P.pmax(2.0, -1.0) == 2.0
    assert P.neg(2.0) == -2.0 and P.sub(1.0, 3.0) == -2.0
    assert isinstance(P.protected_div(1.0, 2.0), float)


def test_primitives_total_on_extreme_arrays():
    a, b = np.meshgrid(EXTREME, EXTREME)
    a, b = a.ravel(), b.ravel()
    for name, (func, arity) in PRIMITIVES.items():
        out = func(a, b) if arity == 2 else func(a)
        assert out.shape == a.shape, name
        assert np.isfinite(out).all(), name


def test_sympy_twins_match_numeric(pset):
    x, y = sympy.symbols("x y", real=True)
    vals = [(0.7, -1.3), (-2.0, 5e-7), (30.0, 0.0), (1e-3, 4.0)]
    for name, (func, arity) in PRIMITIVES.items():
        expr = SYMPY_OPS[name](x, y) if arity == 2 else SYMPY_OPS[name](x)
        f = sympy.lambdify([x, y], expr, modules=P.LAMBDIFY_MODULES)
        for a, b in vals:
            want = func(a, b) if arity == 2 else func(a)
            assert float(f(a, b)) == pytest.approx(want, rel=1e-12), (name, a, b)


def test_make_pset_names_and_errors(pset):
    tree = gp.PrimitiveTree.from_string("sub(v_last, mul(0.5, s25_50))", pset)
    assert str(tree) == "sub(v_last, mul(0.5, s25_50))"
    assert pset.arguments == NAMES
    for bad in (["a", "a"], ["add"], ["1x"], ["class"], []):
        with pytest.raises(ValueError):
            make_pset(bad)


def test_ensure_pred_types_idempotent_and_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ensure_pred_types()
        ensure_pred_types()
    assert creator.PredFitness.weights == (1.0, -1.0)
    assert issubclass(creator.PredIndividual, gp.PrimitiveTree)


def test_compile_tree_broadcast_and_non_finite(pset):
    X = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    const = gp.PrimitiveTree.from_string("0.25", pset)
    assert compile_tree(const, pset)(X).tolist() == [0.25, 0.25]
    tree = gp.PrimitiveTree.from_string("sub(v_last, mul(0.5, s25_50))", pset)
    assert compile_tree(tree, pset)(X).tolist() == [0.0, 1.5]
    sq = gp.PrimitiveTree.from_string("mul(v_last, v_last)", pset)
    out = compile_tree(sq, pset)(np.array([[1e200, 0, 0], [np.nan, 0, 0], [-3.0, 0, 0]]))
    assert out.tolist() == [BIG, BIG, 9.0]
    with pytest.raises(ValueError, match="shape"):
        compile_tree(tree, pset)(np.ones((2, 2)))


def test_random_constants_print_cleanly():
    random.seed(3)
    vals = [P.random_constant() for _ in range(200)]
    assert all(-1.0 <= v <= 1.0 and round(v, 3) == v for v in vals)
    assert all(len(repr(v).split(".")[-1]) <= 3 for v in vals)


def test_toolbox_respects_limits(pset):
    random.seed(0)
    tb = make_pred_toolbox(pset, max_depth=5, max_size=20)
    pop = tb.population(n=30)
    assert all(1 <= t.height <= 3 for t in pop)
    for _ in range(40):
        a, b = random.sample(pop, 2)
        c1, c2 = tb.mate(tb.clone(a), tb.clone(b))
        (m,) = tb.mutate(tb.clone(c1))
        for t in (c1, c2, m):
            assert t.height <= 5 and len(t) <= 20
            assert isinstance(t, creator.PredIndividual)
    y = tb.compile(pop[0])(np.ones((4, 3)))
    assert y.shape == (4,) and np.isfinite(y).all()
    with pytest.raises(ValueError, match="init_min"):
        make_pred_toolbox(pset, init_min=4, init_max=3)
