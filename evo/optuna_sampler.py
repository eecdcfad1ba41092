"""The males as an Optuna sampler: bounded SBX crossover and polynomial mutation (the operators of
evo.genome's male toolbox) over the best complete trials of the study.

    study = optuna.create_study(sampler=DimorphSampler(seed=0), pruner=DimorphPruner())

Every distribution is placed on the unit interval: a float (linear or log, with or without a step)
by its position between low and high, an int by equal bins over its values (a log int by its
position on the log scale, rounded), a categorical by equal bins over its choices in their given
order. A child is bred from two parents, each the better of two trials drawn from the `population`
best complete trials (ties: the lower trial number); a child whose parameters equal an earlier
trial's is mutated again (up to RETRIES times). Before `n_startup_trials` trials are complete, and
for parameters outside the space shared by every complete trial, values are drawn uniformly on the
unit interval.

State: none is kept between trials. Each trial's random draws come from (seed, trial number) alone
and the parents from the study's trials, so two processes sharing an RDB storage breed from the
same trials the same way, and one process run twice with the same seed samples the same values.
"""
from __future__ import annotations

import math
import random
import zlib
from typing import Any

import optuna
from deap import tools
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)
from optuna.search_space import IntersectionSearchSpace
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

RETRIES = 10  # re-mutations of a child that repeats an earlier trial's parameters


def to_unit(dist: BaseDistribution, value: Any) -> float:
    """A parameter's value -> its position in [0, 1] (a bin's centre for ints and categoricals)."""
    if isinstance(dist, CategoricalDistribution):
        return (dist.to_internal_repr(value) + 0.5) / len(dist.choices)
    if isinstance(dist, IntDistribution) and not dist.log:
        n = (dist.high - dist.low) // dist.step + 1
        return ((int(value) - dist.low) // dist.step + 0.5) / n
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        if dist.high == dist.low:
            return 0.5
        if dist.log:
            return (math.log(value) - math.log(dist.low)) / (math.log(dist.high) - math.log(dist.low))
        return (float(value) - dist.low) / (dist.high - dist.low)
    raise ValueError(f"DimorphSampler cannot place a {type(dist).__name__} on the unit interval")


def from_unit(dist: BaseDistribution, u: float) -> Any:
    """A position in [0, 1] (clipped) -> a value of the distribution."""
    u = min(1.0, max(0.0, float(u)))
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    if isinstance(dist, IntDistribution) and not dist.log:
        n = (dist.high - dist.low) // dist.step + 1
        return int(dist.low + min(int(u * n), n - 1) * dist.step)
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        if dist.log:
            x = math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low)))
        else:
            x = dist.low + u * (dist.high - dist.low)
        if isinstance(dist, IntDistribution):
            return int(min(dist.high, max(dist.low, round(x))))
        if dist.step is not None:
            x = dist.low + round((x - dist.low) / dist.step) * dist.step
        return float(min(dist.high, max(dist.low, x)))
    raise ValueError(f"DimorphSampler cannot place a {type(dist).__name__} on the unit interval")


def _trial_rng(seed: int, number: int, what: str) -> random.Random:
    return random.Random(zlib.crc32(f"{seed}|{number}|{what}".encode()))


class _LocalRandom:
    """DEAP's operators draw from the global `random`: run them on a seeded state, then put the
    caller's state back."""

    def __init__(self, rng: random.Random):
        self.seed = rng.getrandbits(64)

    def __enter__(self):
        self.saved = random.getstate()
        random.seed(self.seed)

    def __exit__(self, *exc):
        random.setstate(self.saved)


class DimorphSampler(optuna.samplers.BaseSampler):
    """Breed each trial's parameters from the study's best complete trials (the male operators).

    Args:
        seed: the seed of every draw (None: a random one, so runs differ).
        n_startup_trials: complete trials needed before breeding; before, uniform draws.
        population: how many of the best complete trials may be parents.
        cxpb: probability that the two parents are crossed (else the child copies the first).
        eta: the crowding of SBX crossover and polynomial mutation (larger: children nearer parents).
        indpb: per-parameter mutation probability (default 2 / the number of parameters).
    """

    def __init__(self, seed: int | None = None, n_startup_trials: int = 10, population: int = 10,
                 cxpb: float = 0.9, eta: float = 10.0, indpb: float | None = None):
        for name, v, ok in (("n_startup_trials", n_startup_trials, isinstance(n_startup_trials, int)
                             and n_startup_trials >= 2),
                            ("population", population, isinstance(population, int) and population >= 2),
                            ("cxpb", cxpb, 0.0 <= cxpb <= 1.0), ("eta", eta, eta > 0),
                            ("indpb", indpb, indpb is None or 0.0 < indpb <= 1.0)):
            if not ok:
                raise ValueError(f"DimorphSampler: bad {name}={v!r}")
        self.seed = random.SystemRandom().getrandbits(31) if seed is None else int(seed)
        self.n_startup_trials, self.population = n_startup_trials, population
        self.cxpb, self.eta, self.indpb = cxpb, eta, indpb
        self._space = IntersectionSearchSpace()

    def reseed_rng(self) -> None:
        self.seed = random.SystemRandom().getrandbits(31)

    def infer_relative_search_space(self, study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {name: d for name, d in self._space.calculate(study).items() if not d.single()}

    def parents_pool(self, study) -> list[FrozenTrial]:
        """The best `population` complete trials with a finite value, best first."""
        self._raise_error_if_multi_objective(study)
        sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
        return sorted(done, key=lambda t: (sign * t.value, t.number))[:self.population]

    def sample_relative(self, study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        pool = self.parents_pool(study)
        n_done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if n_done < self.n_startup_trials or len(pool) < 2:
            return {}
        names = sorted(search_space)
        rng = _trial_rng(self.seed, trial.number, "breed")

        def pick():  # tournament of two; the pool is sorted best first
            i, j = rng.randrange(len(pool)), rng.randrange(len(pool))
            return pool[min(i, j)]
        a, b = pick(), pick()
        x = [to_unit(search_space[n], a.params[n]) for n in names]
        y = [to_unit(search_space[n], b.params[n]) for n in names]
        indpb = self.indpb if self.indpb is not None else min(1.0, 2.0 / len(names))
        seen = {tuple(sorted((k, repr(v)) for k, v in t.params.items() if k in search_space))
                for t in study.get_trials(deepcopy=False)
                if t.number != trial.number and all(k in t.params for k in names)}
        with _LocalRandom(rng):
            if random.random() < self.cxpb:
                x, _ = tools.cxSimulatedBinaryBounded(list(x), list(y), eta=self.eta, low=0.0, up=1.0)
            for _ in range(RETRIES + 1):
                child, = tools.mutPolynomialBounded(list(x), eta=self.eta, low=0.0, up=1.0, indpb=indpb)
                params = {n: from_unit(search_space[n], u) for n, u in zip(names, child)}
                if tuple(sorted((k, repr(v)) for k, v in params.items())) not in seen:
                    break
        return params

    def sample_independent(self, study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        u = _trial_rng(self.seed, trial.number, f"param:{param_name}").random()
        return from_unit(param_distribution, u)
