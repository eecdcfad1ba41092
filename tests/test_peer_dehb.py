"""The DEHB peer (evo/peers/dehb.py) on a small table: the budget rule, the same search for the same
seed, DEHB's own fidelities and brackets, failed trainings told as a bad fitness, and a better
architecture than the baseline's row."""
import pytest

pytest.importorskip("dehb")

from evo.config import Config  # noqa: E402
from evo.executors import SerialExecutor  # noqa: E402
from evo.ledger import INF  # noqa: E402
from evo.peers import PeerSearch, missing  # noqa: E402
from evo.peers.dehb import FAILED_FITNESS, fitness  # noqa: E402
from evo.table import TableEvaluator, load_table  # noqa: E402
from evo.tablestats import MemoryCheckpoint, NullTracker  # noqa: E402
from tests.table_helpers import make_table  # noqa: E402


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    # E 10, F 100 steps; its baseline (row 0) is a middling row: 34th of 60, target 1.496, best 1.301
    return str(make_table(tmp_path_factory.mktemp("t"), n=60, seed=1))


def search(table, seed, trainings, fn=None, ckpt=None, **opts) -> PeerSearch:
    """DEHB against `table` for `trainings` mean full trainings of its cost."""
    budget = trainings * load_table(table).mean_full_cost()
    cfg = Config(mode="baseline", table=table, seed=seed, budget_flops=budget, workers=0, progress=False)
    s = PeerSearch(cfg, "dehb", SerialExecutor(fn=fn or TableEvaluator(table)), NullTracker(),
                   ckpt=ckpt or MemoryCheckpoint({}), **opts)
    s.run()
    return s


def steps_of(s: PeerSearch) -> list[int]:
    return [r.result["steps"] for r in s.ledger.records.values()]


def test_dehb_is_found_and_installed():
    assert missing("dehb") is None and missing("asha") is None


def test_budget_is_never_exceeded_and_is_used(table):
    tab = load_table(table)
    unit, dearest = tab.mean_full_cost(), max(tab.cost_per_step) * tab.full_steps
    for seed in (0, 1, 2):
        for trainings in (2.5, 7, 20):
            s = search(table, seed, trainings)
            spent, budget = s.ledger.compute["flops"], trainings * unit
            assert spent <= budget * (1 + 1e-12)
            assert spent > budget - dearest  # it stopped at the first training that did not fit
            paid = sum(float(tab.cost_per_step[tab.row_of(r.genes)]) * r.result["steps"]
                       for r in s.ledger.records.values())
            assert spent == pytest.approx(paid)  # every record trained from step 0, paid once


def test_same_seed_same_search(table):
    a, b, c = search(table, 4, 20), search(table, 4, 20), search(table, 5, 20)
    assert a.state() == b.state() and a.ledger.history == b.ledger.history
    assert [r.genes for r in a.ledger.records.values()] != [r.genes for r in c.ledger.records.values()]


def test_a_rerun_on_the_same_journal_trains_nothing_and_ends_the_same(table):
    ckpt = MemoryCheckpoint({})
    first = search(table, 3, 20, ckpt=ckpt)

    def no_training(task):
        raise AssertionError(f"{task.key} was trained again")

    again = search(table, 3, 20, fn=no_training, ckpt=ckpt)  # DEHB asks the same, the journal answers
    assert again.state() == first.state() and len(first.ledger.records) > 20


def test_records_are_trained_to_dehbs_fidelities_in_hyperbands_brackets(table):
    s = search(table, 0, 20)
    # F = 100, E = 10, eta 3: DEHB's fidelities are 100 / 3^k down to E, rounded to whole steps
    assert s.policy.fidelities == [11, 33, 100]
    steps = steps_of(s)
    assert set(steps) == {11, 33, 100}
    # the first bracket: 9 configurations at 11 steps, the best 3 at 33, the best one at 100
    assert steps[:13] == [11] * 9 + [33] * 3 + [100]
    # the best 3 of the first 9 (by best validation loss at 11 steps) are the ones trained to 33
    recs = list(s.ledger.records.values())
    first = sorted(recs[:9], key=lambda r: r.early["best_val_loss"])
    assert sorted(str(r.genes) for r in first[:3]) == sorted(str(r.genes) for r in recs[9:12])
    # below the full budget nothing is kept to be continued, and only full trainings make the history
    assert all(r.state_file is None for r in recs if r.result["steps"] < 100)
    assert s.ledger.compute["full_trainings"] == steps.count(100)
    with_eta2 = search(table, 0, 20, eta=2)
    assert with_eta2.policy.fidelities == [12, 25, 50, 100]  # 100 / 2^k down to 10
    assert set(steps_of(with_eta2)) == {12, 25, 50, 100}


def test_finds_a_better_architecture_than_the_baseline_row(table):
    tab = load_table(table)
    base = float(tab.targets[tab.row_of(tab.space().baseline)])
    found = [search(table, seed, 20).ledger.best().target for seed in range(5)]
    assert all(f in tab.targets for f in found)  # true targets of real rows
    assert sum(f < base for f in found) >= 3, (found, base)
    assert min(found) < base - 0.05 and min(found) - tab.best_target < 0.05, (found, base, tab.best_target)


def test_a_failed_training_is_told_a_bad_fitness_not_a_crash(table):
    assert fitness({"best_val_loss": 1.5, "diverged": False, "error": None}) == 1.5
    assert fitness({"best_val_loss": 1.5, "diverged": True}) == FAILED_FITNESS
    assert fitness({"best_val_loss": None, "error": "CUDA out of memory"}) == FAILED_FITNESS
    inner = TableEvaluator(table)

    def some_fail(task):  # every architecture of width 16 diverges
        res = inner(task)
        return {**res, "diverged": True, "best_val_loss": None} if task.genes["width"] == 16 else res

    s = search(table, 0, 20, fn=some_fail)
    recs = list(s.ledger.records.values())
    bad = [r for r in recs if r.genes["width"] == 16]
    assert bad and all(r.target == INF or r.result["steps"] < 100 for r in bad)
    best = s.ledger.best()
    assert best is not None and best.genes["width"] != 16 and best.target < INF
    assert s.ledger.compute["flops"] <= 20 * load_table(table).mean_full_cost() * (1 + 1e-12)


def test_without_the_package_it_says_how_to_install_it(table, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "dehb", None)  # import dehb now raises ImportError
    with pytest.raises(ImportError, match=r"pip install --no-deps dehb==0.1\.2.*") as e:
        search(table, 0, 5)
    assert "numpy<2" in str(e.value)
