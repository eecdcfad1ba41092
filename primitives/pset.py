"""The female primitive set: total, vectorised primitives, their sympy twins, DEAP types."""
from __future__ import annotations

import keyword
import random
from typing import Callable, Sequence

import numpy as np
import sympy
from deap import base, creator, gp

EPS = 1e-6        # plog(x) = log(|x| + EPS) >= log(1e-6) ~ -13.8
DIV_EPS = 1e-6    # protected_div(a, b) = 1.0 when |b| < DIV_EPS (as DEAP's symbreg example)
EXP_MAX = 20.0    # pexp(x) = exp(min(x, 20)) <= 4.9e8: 30 nested products stay below 1e308
BIG = 1e30        # compile_tree maps non-finite outputs to BIG and clips to [-BIG, BIG]
CONST_RANGE = (-1.0, 1.0)


def _ret(r):
    """0-d arrays back to float so scalar inputs give scalar outputs."""
    return float(r) if np.ndim(r) == 0 else r


def add(a, b):
    """a + b."""
    return _ret(np.add(a, b))


def sub(a, b):
    """a - b."""
    return _ret(np.subtract(a, b))


def mul(a, b):
    """a * b."""
    return _ret(np.multiply(a, b))


def neg(a):
    """-a."""
    return _ret(np.negative(a))


def protected_div(a, b):
    """a / b, or 1.0 where |b| < DIV_EPS."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    small = np.abs(b) < DIV_EPS
    with np.errstate(over="ignore", invalid="ignore"):
        return _ret(np.where(small, 1.0, a / np.where(small, 1.0, b)))


def plog(a):
    """log(|a| + EPS)."""
    return _ret(np.log(np.abs(a) + EPS))


def pexp(a):
    """exp(min(a, EXP_MAX))."""
    return _ret(np.exp(np.minimum(a, EXP_MAX)))


def psqrt(a):
    """sqrt(|a|)."""
    return _ret(np.sqrt(np.abs(a)))


def pmin(a, b):
    """Elementwise minimum."""
    return _ret(np.minimum(a, b))


def pmax(a, b):
    """Elementwise maximum."""
    return _ret(np.maximum(a, b))


def random_constant() -> float:
    """Ephemeral constant: uniform in CONST_RANGE, rounded to 3 decimals (draws from `random`)."""
    return round(random.uniform(*CONST_RANGE), 3)


PRIMITIVES: dict[str, tuple[Callable, int]] = {
    "add": (add, 2), "sub": (sub, 2), "mul": (mul, 2), "protected_div": (protected_div, 2),
    "neg": (neg, 1), "plog": (plog, 1), "pexp": (pexp, 1), "psqrt": (psqrt, 1),
    "pmin": (pmin, 2), "pmax": (pmax, 2),
}
EPHEMERAL_NAME = "pred_const"


class ProtectedDiv(sympy.Function):
    """Symbolic protected division; numeric only when the divisor is a number."""

    nargs = 2

    @classmethod
    def eval(cls, a, b):
        """a / b (or 1) when b is a number; None keeps the call symbolic."""
        if b.is_Number:
            return sympy.Integer(1) if abs(float(b)) < DIV_EPS else a / b
        return None


# Min/Max are built unevaluated: sympy's eager Min/Max comparisons cost ~25 ms a call; the
# simplify step of export_predictor still collapses them on small trees.
SYMPY_OPS: dict[str, Callable] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "protected_div": lambda a, b: ProtectedDiv(a, b),
    "neg": lambda a: -a,
    "plog": lambda a: sympy.log(sympy.Abs(a) + sympy.Float(EPS)),
    "pexp": lambda a: sympy.exp(sympy.Min(a, sympy.Integer(int(EXP_MAX)), evaluate=False)),
    "psqrt": lambda a: sympy.sqrt(sympy.Abs(a)),
    "pmin": lambda a, b: sympy.Min(a, b, evaluate=False),
    "pmax": lambda a, b: sympy.Max(a, b, evaluate=False),
}
# module mapping for sympy.lambdify of an exported expression (Min/Max print as numpy reduce)
LAMBDIFY_MODULES = [{"ProtectedDiv": protected_div}, "numpy"]


def make_pset(feature_names: Sequence[str]) -> gp.PrimitiveSet:
    """Primitive set whose arguments are named after the features, in the given order."""
    names = list(feature_names)
    if not names:
        raise ValueError("feature_names must not be empty")
    for name in names:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"feature name must be a Python identifier, got {name!r}")
        if name in PRIMITIVES or name == EPHEMERAL_NAME:
            raise ValueError(f"feature name {name!r} clashes with a primitive")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate feature names in {names!r}")
    pset = gp.PrimitiveSet("pred", len(names))
    for name, (func, arity) in PRIMITIVES.items():
        pset.addPrimitive(func, arity, name=name)
    pset.addEphemeralConstant(EPHEMERAL_NAME, random_constant)
    pset.renameArguments(**{f"ARG{i}": name for i, name in enumerate(names)})
    return pset


def ensure_pred_types() -> None:
    """Create creator.PredFitness (fit tau up, size down) and creator.PredIndividual once."""
    if not hasattr(creator, "PredFitness"):
        # objective 1: Kendall tau on the archive's fit part; 2: tree size (bloat tie-break)
        creator.create("PredFitness", base.Fitness, weights=(1.0, -1.0))
    if not hasattr(creator, "PredIndividual"):
        creator.create("PredIndividual", gp.PrimitiveTree, fitness=creator.PredFitness)


def finite_predictions(y, n: int) -> np.ndarray:
    """Broadcast to shape (n,), map NaN/inf to BIG and clip to [-BIG, BIG] (worst loss = BIG)."""
    out = np.array(np.broadcast_to(np.asarray(y, dtype=float), (n,)))
    out[~np.isfinite(out)] = BIG
    return np.clip(out, -BIG, BIG)


def compile_tree(tree, pset: gp.PrimitiveSet) -> Callable[[np.ndarray], np.ndarray]:
    """Compile a tree into f(X) -> (n,) predictions for an (n, n_features) matrix in pset order."""
    func = gp.compile(tree, pset)
    n_args = len(pset.arguments)

    def predict(X) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != n_args:
            raise ValueError(f"expected an (n, {n_args}) feature matrix, got shape {X.shape}")
        with np.errstate(all="ignore"):
            y = func(*X.T)
        return finite_predictions(y, X.shape[0])

    return predict
