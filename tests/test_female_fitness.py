"""The decision-based female fitness (--female-fitness top) on hand-made numbers, and the option."""
import numpy as np
import pytest

from evo.config import Config, parse_config
from evo.females import Females
from primitives.fitness import top_pick


def test_top_pick_perfect_reversed_and_random():
    y = np.arange(30.0)
    assert top_pick(y, y, 12) == 1.0  # picks the true best of every subset
    assert top_pick(-y, y, 12) == -1.0  # picks the true worst
    assert top_pick(2 * y + 5, y, 12, picks=2) == 1.0  # scale-free: any increasing map is perfect
    assert top_pick(-y, y, 12, picks=2) == -1.0
    assert top_pick(np.zeros(30), y, 12) == pytest.approx(0.0)  # all tied: a random pick
    rng = np.random.default_rng(0)
    assert abs(np.mean([top_pick(rng.random(30), y, 12) for _ in range(40)])) < 0.1


def test_top_pick_hand_values_and_ties():
    # one subset (3 records, size 12): the pick's true rank r of m - 1 = 2 gives 1 - 2 r / 2
    assert top_pick([1, 2, 3], [1, 2, 3], 12) == 1.0
    assert top_pick([2, 1, 3], [1, 2, 3], 12) == 0.0  # picks the middle one
    assert top_pick([1, 1, 3], [1, 2, 3], 12) == 0.5  # tied for the pick: ranks 0 and 1 equally likely
    assert top_pick([1, 2, 3], [1, 1, 3], 12) == 0.5  # true tie: the shared average rank 0.5
    assert top_pick([np.nan, 2, 3], [1, 2, 3], 12) == 0.0  # a NaN prediction is not picked
    assert top_pick([1, 2, 3, 4], [1, 2, 3, 4], 12, picks=2) == 1.0
    assert top_pick([1, 3, 2, 4], [1, 2, 3, 4], 12, picks=2) == pytest.approx(1 - 2 * 0.5 / 2)
    assert top_pick([1, 2], [2, 1], 12) == -1.0
    assert top_pick([1], [1], 12) == 0.0 and top_pick([1, 2], [1, 2], 12, picks=2) == 0.0  # undefined
    assert top_pick([3, 1, 2], [1, 2, np.nan], 12) == -1.0  # NaN targets dropped
    with pytest.raises(ValueError, match="same length"):
        top_pick([1, 2], [1, 2, 3], 12)


def test_top_pick_deterministic_and_subset_size():
    rng = np.random.default_rng(1)
    p, y = rng.random(40), rng.random(40)
    assert top_pick(p, y, 12) == top_pick(p.copy(), y.copy(), 12)
    # subsets of the whole archive: the pick is the archive's own, so size 40 is all-or-nothing here
    best = np.argmin(p)
    whole = 1 - 2 * (np.argsort(np.argsort(y))[best]) / 39
    assert top_pick(p, y, 40) == pytest.approx(whole)


def test_option_refused_with_a_clear_error():
    assert Config().female_fitness == "tau"
    assert Config(female_fitness="top").female_fitness == "top"
    with pytest.raises(ValueError, match="female_fitness must be one of tau, top, got 'decisions'"):
        Config(female_fitness="decisions")
    with pytest.raises(SystemExit):
        parse_config(["--female-fitness", "regret"])
    with pytest.raises(ValueError, match="'kendall'"):
        Females(fitness="kendall")
