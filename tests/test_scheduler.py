"""The scheduler interface on the Runner: a method written as a small policy, both drivers, the budget
rule and journal replay (docs/ARCHITECTURE.md "Adding a method")."""
import random

import pytest

from evo.config import Config
from evo.executors import SerialExecutor
from evo.ledger import Ledger
from evo.peers import METHODS, PEERS
from evo.runner import Runner
from evo.scheduler import WAIT, Planned
from evo.table import TableEvaluator, load_table
from evo.tablestats import MemoryCheckpoint, NullTracker
from tests.table_helpers import make_table


class BestOfEarly(Planned):
    """A toy method: early-train n sampled architectures, then train the best of them to the end."""

    name = "best-of-early"

    def __init__(self, preset, ledger, n=5, slots=0):
        self.preset, self.ledger, self.n, self.slots = preset, ledger, n, slots
        self.told, self.refusals = [], []

    def plan(self):
        rng = random.Random(0)
        recs = [self.ledger.new(f"t{i}", self.preset.sample(rng), role="trial") for i in range(self.n)]
        for r in recs:
            yield self.runner.task(r, self.preset.early_steps, "early")
        yield WAIT
        best = min((r for r in recs if r.early_done), key=lambda r: (r.early_val, r.key))
        yield self.runner.task(best, self.preset.full_steps, "full", "/full")
        yield WAIT

    def tell(self, task, rec):
        self.told.append(task.key)

    def refused(self, task):
        self.refusals.append(task.key)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return str(make_table(tmp_path_factory.mktemp("t"), n=20))


def _run(table, budget=None, slots=0, ckpt=None):
    tab = load_table(table)
    preset = tab.space()
    cfg = Config(mode="baseline", table=table, seed=0, budget_flops=budget, workers=0, progress=False)
    ledger = Ledger(preset.full_steps)
    runner = Runner(cfg, preset, SerialExecutor(fn=TableEvaluator(table)), NullTracker(),
                    ckpt or MemoryCheckpoint({}), ledger)
    policy = BestOfEarly(preset, ledger, slots=slots)
    runner.run(policy)
    return tab, ledger, runner, policy


def _cost(tab, ledger, key, steps):
    return float(tab.cost_per_step[tab.row_of(ledger.records[key].genes)]) * steps


def test_a_policy_is_asked_for_batches_and_told_in_the_order_it_asked(table):
    tab, ledger, runner, policy = _run(table)
    E, F = tab.space().early_steps, tab.space().full_steps
    assert policy.told[:5] == ["t0", "t1", "t2", "t3", "t4"] and len(policy.told) == 6
    best = policy.told[5].split("/")[0]
    assert best == min(("t0", "t1", "t2", "t3", "t4"), key=lambda k: (ledger.records[k].early_val, k))
    # every phase is charged its own steps: five early phases, then the continuation's F - E
    want = sum(_cost(tab, ledger, f"t{i}", E) for i in range(5)) + _cost(tab, ledger, best, F - E)
    assert ledger.compute["flops"] == pytest.approx(want, rel=1e-12)
    assert ledger.compute["early_trainings"] == 5 and ledger.compute["full_trainings"] == 1
    assert ledger.best().key == best and policy.refusals == []


def test_the_budget_rule_refuses_the_first_task_that_does_not_fit(table):
    tab, ledger, _, _ = _run(table)
    E = tab.space().early_steps
    early = sum(_cost(tab, ledger, f"t{i}", E) for i in range(5))
    tab, ledger, runner, policy = _run(table, budget=early * 1.01)  # room for the early phases only
    best = min(ledger.records, key=lambda k: (ledger.records[k].early_val, k))
    assert policy.told == [f"t{i}" for i in range(5)] and policy.refusals == [f"{best}/full"]
    assert runner.exhausted and runner.spent() and ledger.compute["flops"] == pytest.approx(early, rel=1e-12)
    assert ledger.compute["full_trainings"] == 0


def test_the_steady_driver_tells_results_in_the_order_of_the_virtual_clock(table):
    tab, ledger, runner, policy = _run(table, slots=2)
    E = tab.space().early_steps
    # two slots, a task lasts its cost: the ends on the virtual clock decide the order told
    ends, slots = {}, [0.0, 0.0]
    for i in range(5):
        start = min(slots)
        slots[slots.index(start)] = ends[f"t{i}"] = start + _cost(tab, ledger, f"t{i}", E)
    assert policy.told[:5] == sorted(ends, key=lambda k: (ends[k], int(k[1:])))


def test_a_rerun_on_the_same_journal_replays_every_result(table):
    ckpt = MemoryCheckpoint({})
    _, ledger1, _, p1 = _run(table, ckpt=ckpt)
    journal = dict(ckpt.journal)
    calls = []
    ckpt.evaluation = lambda task, run: calls.append(task.key) or journal["eval/" + task.key]
    _, ledger2, _, p2 = _run(table, ckpt=ckpt)
    assert calls == p1.told and p2.told == p1.told
    assert ledger2.compute == ledger1.compute and ledger2.best().key == ledger1.best().key


def test_each_peer_is_a_module_of_evo_peers_found_by_name():
    assert PEERS == ("random", "asha", "evolution", "hyperband", "dehb")
    assert {c.__module__ for c in METHODS.values()} == {"evo.peers.random_search", "evo.peers.asha", "evo.peers.aging",
                                                       "evo.peers.hyperband", "evo.peers.dehb"}
