"""Mating: female choice of the male parents, the lineage link, the choosers' credit, and exact budgets."""
import math

import numpy as np
import pytest

from evo.checkpoint import Checkpoint
from evo.config import Config
from evo.engine import Search
from evo.executors import SerialExecutor
from evo.females import Females
from evo.space import step_cost
from evo.table import TableEvaluator, load_table
from evo.tablestats import NullTracker, run_method
from tests.table_helpers import make_table


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> str:
    return str(make_table(tmp_path_factory.mktemp("t"), n=40))


def search(table, out, **kw) -> Search:
    kw = {"females": 8, "pred_steps": 1, "bootstrap": 4, "males": 6, "offspring": 4, "start": "full", **kw}
    cfg = Config(table=table, seed=3, workers=0, progress=False, out=str(out), **kw)
    return Search(cfg, SerialExecutor(fn=TableEvaluator(table)), NullTracker(),
                  ckpt=Checkpoint(cfg.out_dir, cfg.search_fields(), resume=False))


def test_a_choosing_female_takes_the_father_she_judges_best(table, tmp_path):
    s = search(table, tmp_path, mode="combined", gens=1, pairing="choice", choice_sample=6, males=8)
    s.run()
    s.ckpt.close()
    ranked_m = s.policy.rank_males(s.males, s.fem.champion())
    top = ranked_m[: len(ranked_m) // 2]
    recs = {m.key: s.ledger.records[m.key] for m in ranked_m}
    assert {r.target is None for r in recs.values()} == {True, False}  # both kinds of candidates
    for female in s.fem.ranked(s.fem.pop)[:4]:
        for i in range(len(ranked_m)):
            mother = ranked_m[i]
            fathers = [m for m in top if m is not mother]  # the sample is every candidate: the choice is hers
            # the truth where it is known (fully trained), else her prediction calibrated on the archive
            guess = s.fem.predict_losses(female, s.ledger.archive, [recs[m.key] for m in fathers])
            worth = [recs[m.key].target if recs[m.key].target is not None else g for m, g in zip(fathers, guess)]
            best = min(range(len(fathers)), key=lambda j: (worth[j] if np.isfinite(worth[j]) else math.inf, j))
            assert s.policy.pairing.parents(i, ranked_m, female, s.policy) == (mother, fathers[best])


def test_every_child_is_linked_to_its_female_and_predictor_child(table, tmp_path):
    s = search(table, tmp_path, mode="combined", gens=2)
    s.run()
    s.ckpt.close()
    lineage = s.state()["lineage"]
    assert [r["key"] for r in lineage] == [f"g{g}-c{i}" for g in (1, 2) for i in range(4)]
    texts = {str(f) for f in s.fem.pop}
    for row in lineage:
        rec = s.ledger.records[row["key"]]
        assert row["female"] == rec.female and row["female_child"] == rec.female_child and len(row["parents"]) == 2
        assert row["female"] and row["female_child"]
    assert any(r["female_child"] in texts for r in lineage) or len(texts) == 8  # children compete for survival


def test_the_pairing_changes_the_children_not_the_bootstrap(table, tmp_path):
    runs = {p: search(table, tmp_path / p, mode="combined", gens=2, pairing=p) for p in ("choice", "ranked", "random")}
    for s in runs.values():
        s.run()
        s.ckpt.close()
    genes = {p: [s.ledger.records[k].genes for k in sorted(s.ledger.records)] for p, s in runs.items()}
    g0 = {p: [s.ledger.records[k].genes for k in sorted(s.ledger.records) if k.startswith("g0")] for p, s in runs.items()}
    assert g0["choice"] == g0["ranked"] == g0["random"]
    assert genes["choice"] != genes["ranked"] and genes["choice"] != genes["random"]


def test_credit_is_the_share_of_the_archive_a_fully_trained_child_beats(table, tmp_path):
    s = search(table, tmp_path, mode="combined", gens=4)
    s.run()
    s.ckpt.close()
    arch = s.ledger.archive
    credited = [r for r in arch if r.female is not None]
    assert credited and sum(len(c) for c in s.credit.values()) == len(credited)
    for r in credited:  # credited when its generation's promotions were done: the archive up to them
        cut = max(i for i, a in enumerate(arch) if a.generation == r.generation)
        q = float(np.mean([a.target > r.target for a in arch[: cut + 1] if a is not r]))
        assert q in s.credit[r.female]
    assert all(0.0 <= c <= 1.0 for cs in s.credit.values() for c in cs)


def test_mating_order_moves_a_female_by_her_record():
    class F:
        def __init__(self, name, tau):
            self.name, self.fitness = name, type("Fit", (), {"values": (tau, 3)})()

        def __str__(self):
            return self.name

    a, b, c = F("a", 0.60), F("b", 0.58), F("c", 0.50)
    assert [str(x) for x in Females.mating_order([a, b, c], {})] == ["a", "b", "c"]
    # b's children beat every earlier architecture: 0.58 + 0.1 * 0.5 = 0.63 > 0.60
    assert [str(x) for x in Females.mating_order([a, b, c], {"b": [1.0]})] == ["b", "a", "c"]
    # a's children were the worst: 0.60 - 0.05 = 0.55 < 0.58
    assert [str(x) for x in Females.mating_order([a, b, c], {"a": [0.0, 0.0]})] == ["b", "a", "c"]


@pytest.mark.parametrize("mode", ["combined", "male", "female", "random", "asha", "evolution"])
def test_a_search_never_spends_more_than_its_budget(table, tmp_path, mode):
    t = load_table(table)
    full = t.mean_full_cost()
    free = run_method(table, mode, 5, 20 * full, {"bootstrap": 4, "males": 6, "offspring": 4})
    for budget in (0.5 * full, 2.3 * full, 7.7 * full):
        r = run_method(table, mode, 5, budget, {"bootstrap": 4, "males": 6, "offspring": 4})
        assert 0 < r["compute"]["flops"] <= budget or (r["compute"]["flops"] == 0 and budget < 0.5 * full + 1)
        # the same search cut short: its history is a prefix of the unbudgeted one's
        assert r["history"] == free["history"][: len(r["history"])]
        assert all(h["cost"] <= budget for h in r["history"])


def test_generation_0_is_checked_against_the_budget_too(table, tmp_path):
    t = load_table(table)
    s = search(table, tmp_path, mode="combined", gens=3, budget_flops=1.0)  # not even one early training fits
    s.run()
    s.ckpt.close()
    assert s.ledger.compute["flops"] == 0 and s.ledger.compute["trainings"] == 0 and s.exhausted
    cfg = s.cfg
    base = s.ledger.records["g0-b0"].genes
    assert step_cost(cfg, s.preset, base) == t.cost_per_step[t.row_of(base)]


def test_rungs_halve_the_chosen_children_by_the_champion_on_the_longer_curve(table, tmp_path):
    s = search(table, tmp_path, mode="combined", gens=2, offspring=9, rungs=1, eta=3, promote=1, promote_random=1)
    s.run()
    s.ckpt.close()
    E, F = s.E, s.F
    assert s.policy.rung_steps() == [3 * E]
    recs = s.ledger.records
    for g in (1, 2):
        kids = [recs[f"g{g}-c{i}"] for i in range(9)]
        rung = [r for r in kids if r.role == f"rung@{3 * E}"]
        full = [r for r in kids if r.full is not None]
        assert len(rung) == 2 and len(full) == 2  # 9 -> 3 at the rung -> 1, plus the random one
        for r in rung:  # stopped at the rung: its curve reaches 3E, its early loss is still the one at E
            assert r.early["steps"] == 3 * E and r.screen["steps"] == E
            assert r.early_val == r.screen["val_losses"][-1]
        promoted = [r for r in kids if r.role == "promoted"]
        assert len(promoted) == 1 and promoted[0].fully_trained
    t = load_table(table)
    # every phase is paid once: 9 early + 3 rung continuations + 2 continuations per generation
    cost = sum(t.cost_per_step[t.row_of(r.genes)] * ((r.full or r.early)["steps"]) for r in recs.values()
               if not r.pending)
    assert s.ledger.compute["flops"] == pytest.approx(cost)
    # generation 0: 4 bootstrap + 2 extra males (males 6) early phases; then 9 early + 3 rung per generation
    assert s.ledger.compute["early_trainings"] == 6 + 2 * (9 + 3)


@pytest.mark.slow
def test_a_search_with_rungs_and_choice_resumes_to_the_same_result(table, tmp_path, capsys):
    from evo.checkpoint import read_snapshot
    from evo.run import cli

    args = ["--table", table, "--no-progress", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--rungs", "1",
            "--pairing", "choice", "--bootstrap", "3", "--males", "4", "--offspring", "6", "--seed", "2"]
    assert cli(args + ["--gens", "3", "--out", str(tmp_path / "a")]) == 0
    assert "inference not measured (no model: a table lookup)" in capsys.readouterr().out
    assert cli(args + ["--gens", "1", "--out", str(tmp_path / "b")]) == 0
    assert cli(args + ["--gens", "3", "--out", str(tmp_path / "b"), "--resume"]) == 0
    a, b = read_snapshot(tmp_path / "a"), read_snapshot(tmp_path / "b")
    for k in ("history", "archive", "lineage", "compute", "credit"):
        assert a[k] == b[k], k
    assert a["best"]["key"] == b["best"]["key"] and a["best"]["target"] == b["best"]["target"]
    assert any(r["role"].startswith("rung@") for r in a["lineage"])
