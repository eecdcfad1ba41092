"""Promotion: which early-trained children earn more budget. Every promotion rule lives here.

Scores come from the judge (the champion female's raw score, or the early validation loss while
there is no archive to calibrate her on); lower is better. The rules turn scores into decisions:

- `Halving` (generational): the best `promote` of a generation's children go on (with rungs: the
  best 1/eta at each rung between the early and the full budget, exactly `promote` at the last),
  plus `promote_random` drawn at random from the rest (so the archive is not biased by the
  females' own picks). With --start bracket, generation 0 is judged the same way by early loss.
- `AsyncHalving` (steady-state, `--steady N`): asynchronous successive halving; a child is promoted
  when its score ranks among the best `promote` of the last `offspring` early-trained candidates,
  else at random with probability promote_random / offspring.

Both draw from the `random` module, seeded by the Runner.
"""
from __future__ import annotations

import random
from typing import Sequence

PROMOTED, RANDOM, EARLY_ONLY = "promoted", "random", "early-only"


def order(scores: Sequence[float], keys: Sequence[str]) -> list[str]:
    """Keys best first (lowest score; ties by key)."""
    return [k for _, k in sorted(zip(scores, keys))]


class Halving:
    """Synchronous successive halving over one generation (see the module docstring)."""

    def __init__(self, promote: int, promote_random: int, rungs: int = 0, eta: int = 3):
        self.promote, self.promote_random, self.rungs, self.eta = promote, promote_random, rungs, eta

    def rung_steps(self, early: int, full: int) -> list[int]:
        """The rungs' budgets between the early and the full one: early * eta^k, k = 1 .. rungs."""
        return [s for s in (early * self.eta ** k for k in range(1, self.rungs + 1)) if s < full]

    def keep(self, n: int, final: bool) -> int:
        """Candidates a judging step keeps: `promote` at the last one, else n / eta (at least `promote`)."""
        return self.promote if final else max(self.promote, -(-n // self.eta))

    def screen(self, scores: Sequence[float], keys: Sequence[str], final: bool) -> tuple[list[str], list[str]]:
        """The first judging step, on the early budget: (chosen, best first; the random ones)."""
        ranked = order(scores, keys)
        n = self.keep(len(ranked), final)
        chosen, rest = ranked[:n], ranked[n:]
        return chosen, random.sample(rest, min(self.promote_random, len(rest)))

    def bracket(self, scores: Sequence[float], keys: Sequence[str], top: int, always: Sequence[str] = ()
                ) -> tuple[list[str], list[str]]:
        """Generation 0's first bracket (--start bracket): the best `top` by score, then `always`
        (the baseline, the reference every search keeps), then `promote_random` drawn from the rest:
        (chosen in that order; the random ones)."""
        ranked = order(scores, keys)
        chosen = ranked[:top] + [k for k in always if k in ranked[top:]]
        rest = [k for k in ranked if k not in chosen]
        lucky = random.sample(rest, min(self.promote_random, len(rest)))
        return chosen + lucky, lucky

    def cut(self, scores: Sequence[float], keys: Sequence[str], final: bool) -> list[str]:
        """A rung's judging step: the keys that go on, best first."""
        ranked = order(scores, keys)
        return ranked[: self.keep(len(ranked), final)]


class AsyncHalving:
    """Asynchronous successive halving over a sliding window (see the module docstring)."""

    def __init__(self, promote: int, promote_random: int, window: int):
        self.promote, self.promote_random, self.window = promote, promote_random, window

    def role(self, scores: Sequence[float], keys: Sequence[str]) -> str:
        """The decision on the last of `keys` (the newest candidate), judged among the window."""
        rank = sorted(zip(scores, keys)).index((scores[-1], keys[-1]))
        draw = random.random()  # drawn for every child, so the stream does not depend on the ranks
        return (PROMOTED if rank < self.promote else
                RANDOM if draw < self.promote_random / self.window else EARLY_ONLY)
