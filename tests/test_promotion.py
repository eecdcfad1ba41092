"""The promotion rules (evo.promotion) on hand-made scores: who goes on, who is drawn, with what odds."""
import random

import pytest

from evo.promotion import EARLY_ONLY, PROMOTED, RANDOM, AsyncHalving, Halving, order


def test_order_is_lowest_score_first_with_ties_by_key():
    assert order([3.0, 1.0, 2.0, 1.0], ["a", "d", "c", "b"]) == ["b", "d", "c", "a"]


def test_halving_screen_keeps_the_best_promote_and_draws_promote_random_from_the_rest():
    h = Halving(promote=2, promote_random=1)
    scores, keys = [2.9, 2.6, 3.1, 2.7, 3.0], ["k0", "k1", "k2", "k3", "k4"]
    random.seed(4)
    chosen, lucky = h.screen(scores, keys, final=True)
    assert chosen == ["k1", "k3"]
    random.seed(4)
    assert lucky == random.sample(["k0", "k4", "k2"], 1)  # the rest, best first, is what is drawn from


def test_halving_keeps_a_third_at_a_rung_but_never_fewer_than_promote():
    h = Halving(promote=1, promote_random=0, rungs=2, eta=3)
    assert h.rung_steps(early=10, full=100) == [30, 90]
    assert h.rung_steps(early=10, full=60) == [30]  # 90 is not below the full budget
    assert [h.keep(n, final=False) for n in (1, 3, 4, 7, 9)] == [1, 1, 2, 3, 3]
    assert h.keep(9, final=True) == 1
    assert Halving(promote=2, promote_random=0).keep(3, final=False) == 2
    assert h.cut([0.5, 0.1, 0.3, 0.2], ["a", "b", "c", "d"], final=False) == ["b", "d"]


def test_async_halving_promotes_a_top_ranked_newcomer_and_draws_for_every_other():
    rule = AsyncHalving(promote=1, promote_random=1, window=4)
    assert rule.role([2.0, 3.0, 2.5, 1.0], ["a", "b", "c", "d"]) == PROMOTED
    random.seed(0)
    draws = [rule.role([2.0, 3.0, 2.5, 2.9], ["a", "b", "c", "d"]) for _ in range(4000)]
    assert set(draws) == {RANDOM, EARLY_ONLY}
    assert draws.count(RANDOM) / len(draws) == pytest.approx(0.25, abs=0.02)  # promote_random / window
    random.seed(0)
    first = random.random()
    random.seed(0)
    rule.role([1.0], ["a"])  # a promoted child draws too: the random stream does not depend on ranks
    assert random.random() != first
