"""The search's decisions on hand-made inputs: champion choice, truncation, male ranking, promotion."""
import random
import numpy as np

import pytest

from evo.config import Config
from evo.engine import Search
from evo.executors import SerialExecutor
from evo.females import REFERENCE, Females
from evo.ledger import Evaluation
from evo.table import TableEvaluator
from evo.tablestats import MemoryCheckpoint, NullTracker
from tests.table_helpers import make_table


def _fem(texts_fit_hold):
    fem = Females()
    pop = fem.from_strings([t for t, _, _ in texts_fit_hold])
    for ind, (t, fit, hold) in zip(pop, texts_fit_hold):
        ind.fitness.values = (fit, len(ind))
        ind.holdout_tau = hold
    fem.pop = pop
    return fem, {str(i): i for i in pop}


def test_champion_is_the_reference_unless_beaten_on_fit_and_holdout():
    fem, by = _fem([(REFERENCE, 0.50, 0.40), ("l100", 0.60, 0.30), ("sotl", 0.55, 0.45), ("l50", 0.70, 0.42)])
    # l100 wins on fit but loses held out; sotl and l50 beat the reference on both: best held out wins
    assert str(fem.champion()) == "sotl"
    by["sotl"].holdout_tau = 0.41
    assert str(fem.champion()) == "l50"
    for t in ("sotl", "l50"):
        by[t].holdout_tau = 0.40  # a tie with the reference held out is not a win
    assert str(fem.champion()) == REFERENCE
    by["l50"].holdout_tau = float("nan")  # no held-out part: the reference stays
    assert str(fem.champion()) == REFERENCE


def test_champion_rules_fit_and_holdout_need_no_reference_to_beat():
    fem, by = _fem([(REFERENCE, 0.50, 0.40), ("l100", 0.60, 0.30), ("sotl", 0.55, 0.45), ("l50", 0.70, 0.42)])
    fem.rule = "fit"
    assert str(fem.champion()) == "l50"  # the best fit tau, though l100 and l50 lose or tie held out
    fem.rule = "holdout"
    assert str(fem.champion()) == "sotl"  # the best held out among the top five by fit tau
    by["sotl"].holdout_tau = 0.1
    assert str(fem.champion()) == "l50"
    for i in fem.pop:
        i.holdout_tau = float("nan")  # nothing held out: the best fit tau
    assert str(fem.champion()) == "l50"
    with pytest.raises(ValueError, match="champion must be one of reference, fit, holdout, blend, linear, got 'vote'"):
        Config(champion="vote")


def test_truncate_keeps_the_reference_and_the_best_distinct_formulas():
    fem, by = _fem([("l100", 0.9, 0.0), (REFERENCE, 0.1, 0.0), ("l100", 0.9, 0.0), ("sotl", 0.8, 0.0),
                    ("l50", 0.7, 0.0), ("drop", 0.95, 0.0)])
    out = [str(i) for i in fem.truncate(fem.pop, 3)]
    assert out == [REFERENCE, "drop", "l100"]  # the reference first, then by fit tau, duplicates once


@pytest.fixture
def search(tmp_path):
    def make(mode, seed=0, promote=2, promote_random=1):
        d = make_table(tmp_path / "t", n=30)
        cfg = Config(mode=mode, table=str(d), seed=seed, gens=1, promote=promote,
                     promote_random=promote_random, workers=0, progress=False)
        return Search(cfg, SerialExecutor(fn=TableEvaluator(str(d))), NullTracker(), ckpt=MemoryCheckpoint({}))
    return make


def _males(s, early_target):
    """Males with given (early val loss, target or None); returns them in input order."""
    inds = []
    for k, (e, t) in enumerate(early_target):
        ind = s.policy.arch_tb.individual()
        ind.key = f"m{k}"
        rec = s.policy.new(ind.key, {"k": k}, 0, "test")
        rec.early = {"val_losses": [e], "error": None, "diverged": e == float("inf")}
        if t is not None:
            rec.target = t
        inds.append(ind)
    return inds


def test_male_mode_ranks_by_early_validation_loss(search):
    s = search("male")
    males = _males(s, [(2.9, None), (2.7, None), (float("inf"), None), (2.8, 2.5)])
    assert [m.key for m in s.policy.rank_males(males, None)] == ["m1", "m3", "m0", "m2"]


def test_combined_mode_ranks_by_nondominated_fronts(search):
    s = search("combined")
    # (early, target): m0 (1, 5), m1 (2, 4), m2 (3, 3) form the first front; m3 (2, 6) is dominated
    # by m0 and m1; m4 (4, 7) by everything; a failed early run is last
    males = _males(s, [(1.0, 5.0), (2.0, 4.0), (3.0, 3.0), (2.0, 6.0), (4.0, 7.0), (float("inf"), None)])
    ranked = [m.key for m in s.policy.rank_males(males, None)]
    assert set(ranked[:3]) == {"m0", "m1", "m2"} and ranked[3:] == ["m3", "m4", "m5"]
    # within the first front the extremes (infinite crowding distance) come before the middle one
    assert ranked[2] == "m1"


def test_promotion_takes_the_best_early_children_and_one_drawn_from_the_rest(search):
    s = search("male", promote=2, promote_random=1)
    kids = _males(s, [(2.9, None), (2.6, None), (3.1, None), (2.7, None), (float("inf"), None), (3.0, None)])
    for k in kids:
        s.ledger.records[k.key].run_id = None
    random.seed(4)
    best, lucky = s.policy.promote(kids, None)
    chosen = best + lucky
    assert best == ["m1", "m3"]  # the two lowest early validation losses
    assert len(lucky) == 1 and chosen[2] in {"m0", "m2", "m5"}  # one of the rest; the failed m4 never
    roles = {k.key: s.ledger.records[k.key].role for k in kids if k.key != "m4"}
    assert roles["m1"] == roles["m3"] == "promoted" and roles[chosen[2]] == "random"
    assert sum(r == "early-only" for r in roles.values()) == 2
    random.seed(4)
    assert s.policy.promote(kids, None) == (best, lucky)  # the draw comes from the seeded global RNG


def test_promotion_by_a_champion_follows_her_ranking_not_the_early_loss(search):
    s = search("female", promote=2, promote_random=0)
    kids = _males(s, [(2.9, None), (2.6, None), (3.1, None)])
    for k, sotl in zip(kids, (1.0, 3.0, 2.0)):
        s.ledger.records[k.key].run_id = None
        s.ledger.records[k.key].features = {f: 0.0 for f in s.fem.features} | {"sotl": sotl}
    s.ledger.archive[:] = [
        Evaluation("a", {}, target=1.0, features={f: 0.0 for f in s.fem.features} | {"sotl": 1.0}),
        Evaluation("b", {}, target=2.0, features={f: 0.0 for f in s.fem.features} | {"sotl": 2.0})]
    champ = s.fem.from_strings(["sotl"])[0]
    assert s.policy.promote(kids, champ) == (["m0", "m2"], [])  # lowest sotl first, whatever the early loss
    assert s.ledger.records["m0"].predicted == pytest.approx(1.0) and s.ledger.records["m2"].predicted == pytest.approx(2.0)


def test_a_bracket_start_fully_trains_the_best_early_third_the_baseline_and_one_drawn(tmp_path):
    d = make_table(tmp_path / "t", n=40)
    cfg = Config(mode="combined", table=str(d), seed=3, gens=0, bootstrap=6, eta=3, start="bracket",
                 males=4, females=8, pred_steps=1, workers=0, progress=False)
    s = Search(cfg, SerialExecutor(fn=TableEvaluator(str(d))), NullTracker(), ckpt=MemoryCheckpoint({}))
    s.run()
    gen0 = [r for r in s.ledger.records.values() if r.generation == 0]
    assert len(gen0) == 18 and s.ledger.compute["early_trainings"] == 18  # bootstrap x eta, all early-trained
    by_early = sorted((r for r in gen0 if r.early_done or r.fully_trained), key=lambda r: (r.early_val, r.key))
    full = [r.key for r in s.ledger.trained]  # in the order they were fully trained
    assert full[:2] == [r.key for r in by_early[:2]]  # the best 6 / 3 first, best first
    assert "g0-b0" in full  # the baseline always
    drawn = [r.key for r in gen0 if r.role == "random"]
    assert len(drawn) == 1 and drawn[0] in full and drawn[0] not in [r.key for r in by_early[:2]]
    assert len(full) == len(set(full)) == (3 if "g0-b0" in full[:2] else 4)
    assert s.ledger.compute["full_trainings"] == len(full)
    assert {r.role for r in gen0 if r.key not in full} == {"early-only"}


def test_champion_rule_blend_takes_a_blend_only_where_it_beats_her_on_both_parts():
    from types import SimpleNamespace

    from primitives.features import CURVE_FEATURES
    rng = np.random.default_rng(0)
    archive = []
    for k in range(40):
        f = {n: float(rng.normal()) for n in CURVE_FEATURES}
        archive.append(SimpleNamespace(key=f"a{k}", features=f, target=f["v_last"] + 0.6 * f["sotl"]))
    fem = Females(rule="blend")
    fem.pop = fem.from_strings([REFERENCE, "sotl", "l50"])
    fem.evolve(archive, 0, 3)  # scores the three on the archive, no GP step
    assert str(fem.ranked(fem.pop)[0]) == REFERENCE  # v_last ranks best alone
    champ = fem.champion()
    assert "v_last" in str(champ) and "sotl" in str(champ) and "l50" not in str(champ)
    assert champ.fitness.values[0] > 0.95 and champ.holdout_tau > 0.95 and champ.holdout_n > 0
    fem.rule = "reference"
    assert str(fem.champion()) == REFERENCE
    fem.rule = "blend"
    fem.evolve(archive[:3], 0, 3)  # too small to hold any out: no blend
    assert str(fem.champion()) == REFERENCE


def test_champion_rule_linear_adds_a_fitted_weight_per_architecture_feature():
    from types import SimpleNamespace

    from primitives.features import ALL_FEATURES
    rng = np.random.default_rng(1)
    archive = []
    for k in range(40):
        f = {n: float(rng.normal()) for n in ALL_FEATURES}
        archive.append(SimpleNamespace(key=f"a{k}", features=f, target=f["v_last"] - 0.8 * f["log_params"]))
    fem = Females(arch_features=True, rule="linear")
    fem.pop = fem.from_strings([REFERENCE, "sotl"])
    fem.evolve(archive, 0, 2)
    champ = fem.champion()
    text = str(champ)
    assert "log_params" in text and "log_lr" in text and "v_last" in text
    w = float(text.split("mul(")[2].split(",")[0])  # the weight of log_params (members in reverse)
    assert -0.9 < w < -0.6  # the true -0.8, shrunk a little by the ridge
    assert champ.fitness.values[0] > 0.9 and champ.holdout_tau > 0.9
    no_arch = Females(rule="linear")  # without architecture features: the reference rule's champion
    no_arch.pop = no_arch.from_strings([REFERENCE, "sotl"])
    no_arch.evolve(archive, 0, 2)
    assert str(no_arch.champion()) == REFERENCE
