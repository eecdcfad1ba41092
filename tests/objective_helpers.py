"""A synthetic objective for tests of evo.objective: a curve floor + 1 / step, reported every step."""
import math

from evo.objective import Choice, Float, Int, LogFloat, Objective

CALLS = []


def fn(config, steps, state):
    done = state or 0
    CALLS.append((config["x"], done, steps))
    if config["mode"] == "crash":
        raise RuntimeError("this configuration crashes")
    floor = (config["x"] - 0.3) ** 2 + 0.01 * abs(config["n"] - 3) + 0.1 * abs(math.log10(config["lr"]) + 2)
    loss = (lambda s: float("nan")) if config["mode"] == "nan" else (lambda s: floor + 1.0 / s)
    return [(s, loss(s)) for s in range(done + 1, steps + 1)], steps


SPACE = {"x": Float(0, 1), "n": Int(1, 6), "lr": LogFloat(1e-4, 1), "mode": Choice("ok", "ok2", "nan", "crash")}
objective = Objective(fn, SPACE, full_steps=30, name="synthetic")
