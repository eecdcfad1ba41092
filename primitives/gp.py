"""The female toolbox (DEAP aliases) and safe parsing of trees from text."""
from __future__ import annotations

import math
import operator
import random
import re

from deap import base, creator, gp, tools

from primitives.pset import EPHEMERAL_NAME, compile_tree, ensure_pred_types

# mutation mix: (operator name, probability); see pred_mutate
MUTATION_MIX = (("uniform", 0.4), ("node_replacement", 0.3), ("ephemeral", 0.15), ("shrink", 0.15))


def pred_mutate(individual, expr, pset):
    """Apply one of subtree (uniform), node-replacement, ephemeral or shrink mutation at random."""
    names, weights = zip(*MUTATION_MIX)
    choice = random.choices(names, weights=weights)[0]
    if choice == "uniform":
        return gp.mutUniform(individual, expr=expr, pset=pset)
    if choice == "node_replacement":
        return gp.mutNodeReplacement(individual, pset=pset)
    if choice == "ephemeral":
        return gp.mutEphemeral(individual, mode="one")
    return gp.mutShrink(individual)


def make_pred_toolbox(pset: gp.PrimitiveSet, max_depth: int = 8, max_size: int = 60,
                      init_min: int = 1, init_max: int = 3) -> base.Toolbox:
    """Female toolbox: expr, individual, population, mate, mutate, compile (depth/size limited)."""
    if not 1 <= init_min <= init_max <= max_depth:
        raise ValueError(f"need 1 <= init_min <= init_max <= max_depth, got "
                         f"{init_min}, {init_max}, {max_depth}")
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    ensure_pred_types()
    tb = base.Toolbox()
    tb.register("expr", gp.genHalfAndHalf, pset=pset, min_=init_min, max_=init_max)
    tb.register("individual", tools.initIterate, creator.PredIndividual, tb.expr)
    tb.register("population", tools.initRepeat, list, tb.individual)
    tb.register("mate", gp.cxOnePoint)
    tb.register("expr_mut", gp.genFull, pset=pset, min_=0, max_=2)
    tb.register("mutate", pred_mutate, expr=tb.expr_mut, pset=pset)
    for op in ("mate", "mutate"):
        tb.decorate(op, gp.staticLimit(key=operator.attrgetter("height"), max_value=max_depth))
        tb.decorate(op, gp.staticLimit(key=len, max_value=max_size))
    tb.register("compile", compile_tree, pset=pset)
    return tb


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[(),])
""", re.VERBOSE)


def _tokens(text: str, names) -> list[tuple[str, str]]:
    """(kind, token) pairs; ValueError at the first token that is not allowed, in text order."""
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"tree text: bad token {text[pos:pos + 20]!r} at position {pos}")
        if m.lastgroup == "name" and m.group() not in names:
            raise ValueError(f"tree text: unknown name {m.group()!r} at position {pos}")
        if m.lastgroup != "space":
            out.append((m.lastgroup, m.group()))
        pos = m.end()
    return out


def _ephemeral_node(pset: gp.PrimitiveSet, value: float):
    """A constant node of the pset's ephemeral type (so mutEphemeral can redraw it)."""
    cls = pset.mapping.get(EPHEMERAL_NAME)
    if cls is None:
        return gp.Terminal(value, False, object)
    node = cls.__new__(cls)  # bypass __init__, which would draw a random value
    node.value = value
    return node


def tree_from_string(text: str, pset: gp.PrimitiveSet) -> gp.PrimitiveTree:
    """Parse str(tree) text back into a tree, accepting only the pset's names and numbers."""
    if not isinstance(text, str):
        raise ValueError(f"tree text must be a string, got {type(text).__name__}")
    # whitelist every token before building anything: primitive and argument names only
    toks = _tokens(text, set(pset.mapping) - {EPHEMERAL_NAME})
    nodes, pos = [], 0

    def expect(tok: str) -> None:
        nonlocal pos
        if pos >= len(toks) or toks[pos][1] != tok:
            found = toks[pos][1] if pos < len(toks) else "end of text"
            raise ValueError(f"tree text: expected {tok!r}, found {found!r}")
        pos += 1

    def parse() -> None:
        nonlocal pos
        if pos >= len(toks):
            raise ValueError("tree text: unexpected end of text")
        kind, tok = toks[pos]
        pos += 1
        if kind == "number":
            value = float(tok)
            if not math.isfinite(value):
                raise ValueError(f"tree text: non-finite constant {tok!r}")
            nodes.append(_ephemeral_node(pset, value))
        elif kind == "name":
            node = pset.mapping[tok]
            nodes.append(node)
            if isinstance(node, gp.Primitive):
                expect("(")
                for i in range(node.arity):
                    if i:
                        expect(",")
                    parse()
                expect(")")
        else:
            raise ValueError(f"tree text: unexpected {tok!r}")

    parse()
    if pos != len(toks):
        raise ValueError(f"tree text: trailing {toks[pos][1]!r}")
    ensure_pred_types()
    return creator.PredIndividual(nodes)

__all__ = ["make_pred_toolbox", "pred_mutate", "tree_from_string", "MUTATION_MIX"]
