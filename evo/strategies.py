"""Small strategy objects of the co-evolution policy: the mode (which populations evolve, how males
are ranked) and the pairing (which female and which two males make a child). docs/ALGORITHM.md
"Mating" says why each exists; `--mode` and `--pairing` pick them by name.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from evo.ledger import INF


@dataclass(frozen=True)
class Mode:
    """baseline: the baseline alone, trained straight to the full budget. male: males bred and ranked
    on the early validation loss. female: random architectures judged by evolved predictors.
    combined: both, males ranked on NSGA-II fronts of (early loss, predicted or true final loss)."""

    name: str
    males: bool
    """a male population is bred (children inherit from two males)"""
    females: bool
    """a female population evolves and judges promotion"""
    fronts: bool = False
    """males ranked on (early loss, target) fronts, the target predicted by the champion until known"""

    @property
    def straight(self) -> bool:
        """Nothing evolves: the baseline is trained to the full budget in one go."""
        return not (self.males or self.females)


MODES = {m.name: m for m in (Mode("baseline", False, False), Mode("male", True, False),
                             Mode("female", False, True), Mode("combined", True, True, fronts=True))}


class Ranked:
    """The i-th female in mating order with the i-th ranked male and a random top-half father."""

    name = "ranked"

    def female(self, i: int, ranked_f: list):
        return ranked_f[i % len(ranked_f)]

    def fathers(self, mother, ranked_m: list) -> list:
        top = ranked_m[: max(2, len(ranked_m) // 2)]
        return [m for m in top if m is not mother] or top

    def parents(self, i: int, ranked_m: list, female, search) -> tuple:
        mother = ranked_m[i % len(ranked_m)]
        return mother, random.choice(self.fathers(mother, ranked_m))


class Choice(Ranked):
    """As ranked, but the female judges up to --choice-sample top-half males (by the true target where
    it is known, else her own calibrated prediction) and takes the best as the father."""

    name = "choice"

    def parents(self, i: int, ranked_m: list, female, search) -> tuple:
        if female is None or search.judge(female) is None:
            return super().parents(i, ranked_m, female, search)
        mother = ranked_m[i % len(ranked_m)]
        fathers = self.fathers(mother, ranked_m)
        sample = random.sample(fathers, min(search.cfg.choice_sample, len(fathers)))
        recs = [search.ledger.records[m.key] for m in sample]
        unknown = [r for r in recs if r.target is None and r.features is not None]
        guess = dict(zip((r.key for r in unknown), search.fem.predict_losses(female, search.fem_archive(), unknown)))

        def worth(m):  # the truth where it is known, else her calibrated prediction
            r = search.ledger.records[m.key]
            w = r.target if r.target is not None else guess.get(m.key, INF)
            return (w if math.isfinite(w) else INF, ranked_m.index(m))
        return mother, min(sample, key=worth)


class RandomPairing:
    """The ablation: a random female, two random males."""

    name = "random"

    def female(self, i: int, ranked_f: list):
        return random.choice(ranked_f)

    def parents(self, i: int, ranked_m: list, female, search) -> tuple:
        pair = random.sample(ranked_m, 2) if len(ranked_m) >= 2 else ranked_m * 2
        return pair[0], pair[1]


PAIRINGS = {p.name: p for p in (Ranked(), Choice(), RandomPairing())}
