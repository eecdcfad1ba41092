"""Export a female tree as a sympy formula in JSON, and load it back safely.

The document (version 2) holds the tree (DEAP text: what Dimorph loads and evaluates) and the same
formula as standard sympy text that any tool can read without Dimorph: `sympy.sympify(doc["sympy"])`
and `sympy.lambdify(symbols, expr, "numpy")` give the predictions that `load_predictor` gives.
- Protected division is written as `Piecewise((1, Abs(b) < 1.0e-6), (a/b, True))`. numpy evaluates
  both branches of a Piecewise, so a/b is computed (and warns) where |b| is tiny although that branch
  is not taken: evaluate under `numpy.errstate(divide="ignore", invalid="ignore", over="ignore")`,
  with numpy arrays (plain Python floats raise ZeroDivisionError in that branch).
- Every number in the text is rounded to ROUND_DIGITS (6) significant digits. Evolved constants
  have 3 decimals and the calibration is rounded before use, so only constants that simplification
  folds together (a product of two constants, say) lose digits. The export checks that the text
  reproduces the tree's predictions within CHECK_RTOL (1e-5 relative) on fixed random feature rows
  and the caller's data; where 6 digits do not (an exp amplifies a rounded constant, say) it keeps
  10, then 17 digits, and "round_digits" records how many ("sympy_checked": whether the check
  passed).
- "calibration" {"a", "b"} (optional): the predictor returns a * tree + b, an affine map fitted so
  that predictions come out as losses (a > 0: the ranking is the tree's); the text includes it.
- "fitted_at" {"early_steps", "full_steps", "early_frac"} (optional): the budgets the formula was
  fitted at; features are fractions of the early budget, so a formula is meant for curves cut at the
  same early fraction (evo.predict warns when its budgets differ).
Version 1 documents (the sympy text used a `ProtectedDiv` function, no calibration) still load.

Simplification: `sympy.simplify` is tried only for trees of at most SIMPLIFY_MAX_SIZE nodes
(it costs ~0.3 s a small tree and can take minutes on deep ones); larger trees keep the
unsimplified expression, which is still exact.

Loading never evaluates file text: the formula is rebuilt from the "tree" field through
`tree_from_string` (a token whitelist), and the "sympy" field is only checked to contain
nothing but names, numbers and operators. A tree nested deeper than MAX_TREE_DEPTH is refused
before it is parsed: the parser recurses per level and DEAP compiles a tree through Python source,
whose parser refuses 200 nested parentheses.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Sequence

import numpy as np
import sympy
from deap import gp

import primitives.pset as pset_lib
from primitives.gp import tree_from_string
from primitives.pset import (BIG, DIV_EPS, LAMBDIFY_MODULES, SYMPY_OPS, ProtectedDiv, compile_tree,
                             finite_predictions, make_pset)

FORMAT = "dimorph-predictor"
VERSION = 2
READS_VERSIONS = (1, 2)
ROUND_DIGITS = 6
"""significant digits of every number in the exported sympy text (and of the calibration)"""
MORE_DIGITS = (10, 17)
"""kept instead when 6 digits do not reproduce the tree (the document's "round_digits" says which)"""
SIMPLIFY_MAX_SIZE = 40
MAX_TREE_DEPTH = 100
"""deepest nesting of primitives a loaded tree may have (evolved trees are at most 8 deep)"""
# names that may appear in an exported sympy string besides the feature names
SYMPY_NAMES = {"ProtectedDiv", "Min", "Max", "Heaviside", "ITE", "re", "im", "Abs", "exp", "log",
               "sqrt", "sign", "Piecewise",
               "And", "Or", "Not", "Eq", "Ne", "True", "False", "E", "pi", "oo", "zoo", "nan",
               "Float", "Integer", "Rational"}
_SYMPY_TEXT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+|"
                         r"\*\*|[-+*/(),<>=!&|~]=?|\s+")


def feature_symbols(pset: gp.PrimitiveSet) -> dict[str, sympy.Symbol]:
    """A real sympy symbol per pset argument (feature)."""
    return {name: sympy.Symbol(name, real=True) for name in pset.arguments}


def to_sympy(tree, pset: gp.PrimitiveSet) -> sympy.Expr:
    """Unsimplified sympy expression of a tree built from this pset."""
    # Same result as sympify(str(tree), locals={**symbols, **SYMPY_OPS}), built node by node:
    # no text is parsed, and it is ~2.5x faster (the round-trip test converts 500 trees).
    symbols = feature_symbols(pset)
    stack: list[sympy.Expr] = []
    for node in reversed(tree):  # prefix order reversed: a node's arguments are on the stack
        if isinstance(node, gp.Primitive):
            if node.name not in SYMPY_OPS:
                raise ValueError(f"primitive {node.name!r} has no sympy twin")
            args = [stack.pop() for _ in range(node.arity)]
            stack.append(SYMPY_OPS[node.name](*args))
        elif isinstance(node.value, str):
            if node.value not in symbols:
                raise ValueError(f"terminal {node.value!r} is not a feature of the pset")
            stack.append(symbols[node.value])
        else:
            stack.append(sympy.Float(float(node.value)))
    if len(stack) != 1:
        raise ValueError(f"malformed tree: {tree}")
    return stack[0]


def simplify_expr(expr: sympy.Expr, size: int, max_size: int = SIMPLIFY_MAX_SIZE) -> sympy.Expr:
    """sympy.simplify for trees of at most max_size nodes; the expression unchanged otherwise."""
    return sympy.simplify(expr) if size <= max_size else expr


def sympy_callable(expr: sympy.Expr, features: Sequence[str]):
    """numpy function of the expression, arguments in the given feature order."""
    return sympy.lambdify([sympy.Symbol(n, real=True) for n in features], expr,
                          modules=LAMBDIFY_MODULES)


def used_features(tree, pset: gp.PrimitiveSet) -> list[str]:
    """The pset features that appear in the tree, in pset order."""
    # an argument terminal keeps name "ARGi" after renameArguments; its value is the new name
    names = {node.value for node in tree if isinstance(node, gp.Terminal)}
    return [a for a in pset.arguments if a in names]


def round_sig(x: float, digits: int = ROUND_DIGITS) -> float:
    """x rounded to `digits` significant digits (0, inf and nan unchanged)."""
    x = float(x)
    return float(f"{x:.{digits}g}") if math.isfinite(x) and x != 0 else x


def _plain_number(x: float, digits: int = ROUND_DIGITS) -> sympy.Expr:
    """A rounded number as sympy: an Integer when it is whole, else a Float of that precision."""
    r = round_sig(x, digits)
    if r.is_integer() and abs(r) < 1e15:
        return sympy.Integer(int(r))
    return sympy.Float(repr(r), digits)


def protected_div_sympy(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    """a / b, or 1 where |b| < DIV_EPS, as a standard sympy Piecewise.

    A divisor that holds a Piecewise itself (a protected division in a divisor) is folded first:
    b = Piecewise((b_1, c_1), (b_2, c_2), ...) gives the branches (1, c_i & |b_i| < eps),
    (a/b_i, c_i) in order, so no condition contains a Piecewise (sympy would turn it into an ITE,
    which numpy's printer cannot always print)."""
    eps = sympy.Float(DIV_EPS)
    if not b.has(sympy.Piecewise):
        return sympy.Piecewise((sympy.Integer(1), sympy.Abs(b) < eps), (a / b, True))
    folded = sympy.piecewise_fold(b)
    if not isinstance(folded, sympy.Piecewise):
        folded = sympy.Piecewise((folded, True))
    branches = []
    for d, c in folded.args:
        branches += [(sympy.Integer(1), sympy.And(c, sympy.Abs(d) < eps)), (a / d, c)]
    return sympy.Piecewise(*branches)


def plain_sympy(expr: sympy.Expr, digits: int = ROUND_DIGITS) -> sympy.Expr:
    """The expression in standard sympy: ProtectedDiv(a, b) becomes a Piecewise
    (protected_div_sympy) and every Float is rounded to `digits` significant digits."""
    expr = expr.replace(ProtectedDiv, protected_div_sympy)
    return expr.xreplace({f: _plain_number(f, digits) for f in expr.atoms(sympy.Float)})


def check_calibration(calibration) -> dict | None:
    """{"a": float > 0, "b": float} rounded to ROUND_DIGITS, from a mapping or (a, b); None stays None."""
    if calibration is None:
        return None
    try:
        a, b = ((calibration["a"], calibration["b"]) if isinstance(calibration, Mapping)
                else tuple(calibration))
        a, b = float(a), float(b)
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"calibration must be {{'a': number, 'b': number}}, got {calibration!r}") \
            from None
    if not (math.isfinite(a) and math.isfinite(b) and a > 0):
        raise ValueError(f"calibration needs a finite a > 0 (keeps the ranking) and a finite b, "
                         f"got a={a!r}, b={b!r}")
    return {"a": round_sig(a), "b": round_sig(b)}


def check_interval(interval) -> dict | None:
    """An exported error interval {"level" in (0, 1), "lo" <= "hi" finite, "n"}: the prediction
    plus lo and plus hi bound about `level` of the targets (evo.fit's training residuals)."""
    if interval is None:
        return None
    try:
        level, lo, hi = (float(interval[k]) for k in ("level", "lo", "hi"))
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"interval must be {{'level', 'lo', 'hi'}} numbers, got {interval!r}") from None
    if not (0 < level < 1 and math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"interval needs 0 < level < 1 and finite lo <= hi, got {interval!r}")
    return {"level": level, "lo": lo, "hi": hi, "n": interval.get("n")}


def check_fitted_at(early_steps, full_steps) -> dict:
    """{"early_steps", "full_steps", "early_frac"} after checking 0 < early_steps <= full_steps."""
    ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
             for v in (early_steps, full_steps))
    if not ok or not 0 < early_steps <= full_steps:
        raise ValueError(f"fitted_at needs integers 0 < early_steps <= full_steps, got "
                         f"{early_steps!r} and {full_steps!r}")
    return {"early_steps": int(early_steps), "full_steps": int(full_steps),
            "early_frac": early_steps / full_steps}


CHECK_RTOL = 1e-5
"""how closely the exported text must reproduce the tree (relative; numbers rounded to 6 digits)"""
CHECK_POINTS = 64


def _probe_rows(pset: gp.PrimitiveSet, rows=None) -> np.ndarray:
    """Feature rows to check an export on: fixed random ones (both signs, several scales) and the
    caller's rows (pset order)."""
    rng = np.random.default_rng(20240611)
    n = len(pset.arguments)
    X = np.vstack([rng.normal(0.0, 2.0, size=(CHECK_POINTS // 2, n)),
                   rng.normal(0.0, 0.2, size=(CHECK_POINTS // 2, n))])
    if rows is not None:
        R = np.asarray(rows, dtype=float).reshape(-1, n)
        X = np.vstack([X, R[np.isfinite(R).all(axis=1)]])
    return X


def _tree_predictions(tree, pset: gp.PrimitiveSet, cal: dict | None, X: np.ndarray) -> np.ndarray:
    """What a loaded Predictor returns on X (pset order)."""
    y = pset_lib.compile_tree(tree, pset)(X)
    return y if cal is None else finite_predictions(cal["a"] * y + cal["b"], len(y))


def text_predictions(text: str, names: Sequence[str], X: np.ndarray) -> np.ndarray:
    """Predictions of an exported sympy text as any tool gets them: plain `sympy.sympify` and
    `sympy.lambdify(..., "numpy")`, untaken Piecewise branches silenced, non-finite -> BIG."""
    expr = sympy.sympify(text)
    func = sympy.lambdify([sympy.Symbol(n) for n in names], expr, "numpy")
    with np.errstate(all="ignore"):
        y = func(*np.asarray(X, dtype=float).T)
    return finite_predictions(y, len(X))


def _reproduces(text: str, names: Sequence[str], want: np.ndarray, X: np.ndarray) -> bool:
    """Whether the text gives the tree's predictions on X (within CHECK_RTOL, relative to each value
    and at least to the median magnitude)."""
    try:
        got = text_predictions(text, names, X)
    except Exception:  # noqa: BLE001 - any failure to evaluate means "does not reproduce"
        return False
    scale = np.maximum(np.abs(want), np.median(np.abs(want)) + 1e-12)
    return bool((np.abs(got - want) <= CHECK_RTOL * scale).all())


def export_predictor(tree, pset: gp.PrimitiveSet, meta: dict | None = None,
                     simplify: bool = True, calibration=None, early_steps: int | None = None,
                     full_steps: int | None = None, check_rows=None) -> dict:
    """JSON-serialisable document of a predictor: tree text, standard sympy text (the calibration
    included), LaTeX, features, calibration and the budgets it was fitted at (the arguments, else
    meta's "early_steps"/"full_steps" when it has both).

    The sympy text is checked to reproduce the tree's predictions (sympify + lambdify with numpy) on
    fixed random feature rows and on `check_rows` (an (n, len(pset.arguments)) matrix, e.g. the data
    the formula was fitted on): sympy.simplify may rewrite an expression into one that is equal over
    the complex numbers but not in numpy's real arithmetic (sqrt(|a|)*sqrt(|b|) becomes
    |sqrt(a)*sqrt(b)|, NaN for a < 0 in numpy, say): the unsimplified formula is exported then.
    If no text reproduces the tree, the unsimplified one is written with "sympy_checked": false
    (the tree, which Dimorph loads, stays exact)."""
    meta = dict(meta or {})
    try:
        json.dumps(meta)
    except TypeError as err:
        raise ValueError(f"meta must be JSON-serialisable: {err}") from None
    cal = check_calibration(calibration)
    if early_steps is None and full_steps is None:
        early_steps, full_steps = meta.get("early_steps"), meta.get("full_steps")
    fitted_at = (check_fitted_at(early_steps, full_steps)
                 if early_steps is not None or full_steps is not None else None)
    raw = to_sympy(tree, pset)
    if cal is not None:
        raw = _plain_number(cal["a"]) * raw + _plain_number(cal["b"])
    X = _probe_rows(pset, check_rows)
    want = _tree_predictions(tree, pset, cal, X)
    candidates = [raw]
    if simplify and len(tree) <= SIMPLIFY_MAX_SIZE:
        candidates.insert(0, simplify_expr(raw, len(tree)))
    checked = False
    for digits in (ROUND_DIGITS, *MORE_DIGITS):
        found = next((e for e in (plain_sympy(c, digits) for c in candidates)
                      if _reproduces(str(e), pset.arguments, want, X)), None)
        if found is not None:
            expr, checked = found, True
            break
    else:  # never seen on 600 random trees; the tree stays exact, the text is marked
        expr = plain_sympy(raw, digits)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "tree": str(tree),
        "sympy": str(expr),
        "latex": sympy.latex(expr),
        "features": used_features(tree, pset),
        "feature_order": list(pset.arguments),
        "round_digits": digits,
        "sympy_checked": checked,
    }
    if cal is not None:
        doc["calibration"] = cal
    if fitted_at is not None:
        doc["fitted_at"] = fitted_at
    doc["meta"] = meta
    return doc


def nesting_depth(text: str) -> int:
    """Deepest parenthesis nesting of a text (no recursion, any length)."""
    depth = deepest = 0
    for ch in text:
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    return deepest


def _check_sympy_text(text: str, allowed: set[str]) -> None:
    """ValueError unless the text consists of allowed names, numbers and operators only."""
    pos = 0
    while pos < len(text):
        m = _SYMPY_TEXT.match(text, pos)
        if m is None:
            raise ValueError(f"predictor file: bad token {text[pos:pos + 20]!r} in 'sympy'")
        tok = m.group()
        if (tok[0].isalpha() or tok[0] == "_") and tok not in allowed:
            raise ValueError(f"predictor file: unknown name {tok!r} in 'sympy'")
        pos = m.end()


class Predictor:
    """A loaded predictor: call it on a feature dict or an (n, len(features)) matrix."""

    def __init__(self, tree, pset: gp.PrimitiveSet, meta: dict, calibration: dict | None = None,
                 fitted_at: dict | None = None):
        self.tree = tree
        self.pset = pset
        self.meta = meta
        self.calibration = check_calibration(calibration)
        """{"a", "b"}: predictions are a * tree + b (losses); None: the tree's raw output"""
        self.interval = None
        """{"level", "lo", "hi", "n"}: the error interval of the file (evo.fit), when it has one"""
        self.fitted_at = fitted_at
        """{"early_steps", "full_steps", "early_frac"} the formula was fitted at, when known"""
        self.feature_order = list(pset.arguments)
        self.features = used_features(tree, pset)
        self.expr = to_sympy(tree, pset)
        self._func = compile_tree(tree, pset)

    def __call__(self, x):
        """Predictions: a float for a dict of scalars, else an (n,) array."""
        if isinstance(x, Mapping):
            missing = [n for n in self.features if n not in x]
            if missing:
                raise ValueError(f"predictor needs feature {missing[0]!r}, which is missing")
            cols = [np.atleast_1d(np.asarray(x[n], dtype=float)) for n in self.features]
            n = max(len(c) for c in cols) if cols else 1
            X = np.column_stack([np.broadcast_to(c, (n,)) for c in cols]) if cols \
                else np.zeros((1, 0))
            y = self._predict_used(X)
            scalar = all(np.ndim(x[f]) == 0 for f in self.features)
            return float(y[0]) if scalar else y
        X = np.asarray(x, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise ValueError(f"expected an (n, {len(self.features)}) matrix in the order "
                             f"{self.features}, got shape {X.shape}")
        return self._predict_used(X)

    def overflows(self, features: Mapping) -> bool:
        """Whether the formula itself (before calibration) leaves the finite range on these scalar
        features: its prediction is then the clipped sentinel, not a number about the curve."""
        X = np.array([[float(features[n]) for n in self.features]]).reshape(1, len(self.features))
        return not abs(float(self._raw(X)[0])) < BIG

    def _raw(self, X: np.ndarray) -> np.ndarray:
        full = np.zeros((X.shape[0], len(self.feature_order)))
        for j, name in enumerate(self.features):
            full[:, self.feature_order.index(name)] = X[:, j]
        return finite_predictions(self._func(full), X.shape[0])

    def _predict_used(self, X: np.ndarray) -> np.ndarray:
        """Evaluate on columns of the used features (unused pset arguments are set to 0)."""
        y = self._raw(X)
        if self.calibration is None:
            return y
        return finite_predictions(self.calibration["a"] * y + self.calibration["b"], X.shape[0])

    def __repr__(self) -> str:
        return f"Predictor({self.expr})"


def load_predictor(doc_or_path) -> Predictor:
    """Load an exported predictor from a dict or a JSON file path, validating every field."""
    if isinstance(doc_or_path, Mapping):
        doc, where = doc_or_path, "predictor"
    elif isinstance(doc_or_path, (str, Path)):
        where = str(doc_or_path)
        try:
            doc = json.loads(Path(doc_or_path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{where}: cannot read a predictor JSON: {err}") from None
    else:
        raise ValueError(f"expected a dict or a path, got {type(doc_or_path).__name__}")
    if not isinstance(doc, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        raise ValueError(f"{where}: format must be {FORMAT!r}, got {doc.get('format')!r}")
    version = doc.get("version")
    if isinstance(version, bool) or version not in READS_VERSIONS:
        raise ValueError(f"{where}: unsupported version {version!r} (this Dimorph reads "
                         f"{FORMAT} versions {', '.join(map(str, READS_VERSIONS))})")
    order = doc.get("feature_order")
    if not isinstance(order, list) or not all(isinstance(n, str) for n in order):
        raise ValueError(f"{where}: feature_order must be a list of names, got {order!r}")
    text = doc.get("tree")
    if isinstance(text, str) and nesting_depth(text) > MAX_TREE_DEPTH:
        raise ValueError(f"{where}: the tree is nested {nesting_depth(text)} deep, more than the "
                         f"{MAX_TREE_DEPTH} a predictor may have")
    try:
        pset = make_pset(order)
        tree = tree_from_string(text, pset)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{where}: {_one_line(err)}") from None
    features = used_features(tree, pset)
    if "features" in doc and doc["features"] != features:
        raise ValueError(f"{where}: 'features' {doc['features']!r} does not match the tree, "
                         f"which uses {features!r}")
    if "sympy" in doc:
        if not isinstance(doc["sympy"], str):
            raise ValueError(f"{where}: 'sympy' must be a string")
        try:
            _check_sympy_text(doc["sympy"], SYMPY_NAMES | set(order))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    meta = doc.get("meta", {})
    if not isinstance(meta, Mapping):
        raise ValueError(f"{where}: 'meta' must be an object, got {type(meta).__name__}")
    calibration, fitted_at = doc.get("calibration"), None
    try:
        calibration = check_calibration(calibration)
        interval = check_interval(doc.get("interval"))
        if doc.get("fitted_at") is not None:
            at = doc["fitted_at"]
            if not isinstance(at, Mapping):
                raise ValueError(f"fitted_at must be an object, got {at!r}")
            fitted_at = check_fitted_at(at.get("early_steps"), at.get("full_steps"))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    if fitted_at is None and version == 1:  # the engine's version 1 files name them in meta
        try:
            fitted_at = check_fitted_at(meta.get("early_steps"), meta.get("full_steps"))
        except ValueError:
            fitted_at = None
    try:
        predictor = Predictor(tree, pset, dict(meta), calibration, fitted_at)
        predictor.interval = interval
        return predictor
    except (SyntaxError, RecursionError, MemoryError) as err:  # compile limits of deep trees
        raise ValueError(f"{where}: the tree cannot be compiled "
                         f"({type(err).__name__}: {_one_line(err)})") from None


def _one_line(err: BaseException) -> str:
    """The first line of an exception's message."""
    text = str(err.msg if isinstance(err, SyntaxError) else err)
    return text.splitlines()[0] if text else type(err).__name__
