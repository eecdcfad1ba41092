"""Steady-state scheduling (--steady N): no generation barrier, yet the same results on any executor."""
import random
import time

import pytest

from engine_helpers import fast_config, outcome
from evo.checkpoint import Checkpoint, CheckpointError, read_snapshot
from evo.config import Config
from evo.engine import Search
from evo.executors import Feed, ProcessExecutor, SerialExecutor, feed_of
from evo.space import step_cost
from evo.table import TableEvaluator
from evo.tablestats import NullTracker
from tests.table_helpers import make_table


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> str:
    return str(make_table(tmp_path_factory.mktemp("t"), n=60))


def config(table, out, **kw) -> Config:
    kw = {"females": 8, "pred_steps": 1, "bootstrap": 4, "males": 6, "offspring": 6, "gens": 4, "steady": 3,
          "mode": "combined", "start": "full", **kw}
    return Config(table=table, seed=5, workers=0, progress=False, out=str(out), **kw)


def search(cfg, executor=None) -> Search:
    ex = executor or SerialExecutor(fn=TableEvaluator(cfg.table))
    return Search(cfg, ex, NullTracker(), ckpt=Checkpoint(cfg.out_dir, cfg.search_fields(), resume=cfg.resume))


def finished(s: Search) -> dict:
    """Run the search to its end; what two runs of one search must agree on."""
    s.run()
    s.ckpt.close()
    st = s.state()
    out = {k: st[k] for k in ("males", "females", "archive", "lineage", "compute", "history")}
    return {**out, "best": {k: v for k, v in st["best"].items() if k != "state"}}  # a path under --out


class Shuffled:
    """An executor whose results come back in a random order: the newest fed task, or any pending."""

    def __init__(self, fn, seed):
        self.fn, self.rng = fn, random.Random(seed)

    def run(self, tasks):
        feed, pending = feed_of(tasks), []
        while True:
            pending += feed.take()
            if not pending:
                return
            yield self.fn(pending.pop(self.rng.randrange(len(pending))))


class Interrupted(TableEvaluator):
    """The table's evaluation, killed (KeyboardInterrupt) at the n-th call."""

    def __init__(self, directory, n):
        super().__init__(directory)
        self.n = n

    def __call__(self, task):
        self.n -= 1
        if self.n < 0:
            raise KeyboardInterrupt
        return super().__call__(task)


def test_results_do_not_depend_on_the_order_results_arrive_in(table, tmp_path):
    ref = finished(s := search(config(table, tmp_path / "serial")))
    assert s.ledger.compute["full_trainings"] > 4  # children were promoted, not only the bootstrap
    for seed in (0, 1):
        cfg = config(table, tmp_path / f"shuffled{seed}")
        got = finished(search(cfg, Shuffled(TableEvaluator(table), seed)))
        assert got == ref


def test_process_workers_give_the_serial_result(table, tmp_path):
    ref = finished(search(config(table, tmp_path / "serial", gens=2)))
    cfg = config(table, tmp_path / "procs", gens=2)
    with ProcessExecutor(2, fn=TableEvaluator(table)) as ex:
        assert finished(search(cfg, ex)) == ref


def test_every_generation_is_closed_and_children_are_judged_one_by_one(table, tmp_path):
    s = search(config(table, tmp_path))
    st = finished(s)
    assert [row["gen"] for row in s.logbook] == [0, 1, 2, 3, 4]
    children = [r for r in s.ledger.records.values() if r.role not in ("baseline", "bootstrap", "init")]
    assert len(children) == 4 * 6
    roles = [r.role for r in children]
    assert set(roles) <= {"promoted", "random", "early-only", "child"}
    # every promoted or lucky child was continued to the full budget; no other child was
    assert {r.key for r in children if r.full is not None} == {r.key for r in children if r.role in ("promoted", "random")}
    assert st["compute"]["full_trainings"] == 4 + sum(r in ("promoted", "random") for r in roles)
    assert st["compute"]["early_trainings"] == 6 + 24  # generation 0's males, then the children
    # the females took in every mating's predictor child by the end (up to their population size)
    assert len(s.fem.pop) == 8


def test_the_budget_is_never_exceeded(table, tmp_path):
    cfg = config(table, tmp_path / "free")
    free = search(cfg)
    free.run()
    spent = free.ledger.compute["flops"]
    for frac in (0.5, 0.8):
        cfg = config(table, tmp_path / f"b{frac}", budget_flops=spent * frac)
        s = search(cfg)
        finished(s)
        largest = max(step_cost(cfg, s.preset, r.genes) * s.F for r in s.ledger.records.values())
        assert cfg.budget_flops - largest < s.ledger.compute["flops"] <= cfg.budget_flops
        assert s.exhausted


def test_an_interrupted_search_resumes_to_the_same_result(table, tmp_path):
    ref = finished(search(config(table, tmp_path / "a")))
    cfg = config(table, tmp_path / "b")
    s = search(cfg, SerialExecutor(fn=Interrupted(table, 25)))
    with pytest.raises(KeyboardInterrupt):
        s.run()
    s.ckpt.close()
    resumed = search(config(table, tmp_path / "b", resume=True))
    assert finished(resumed) == ref


def test_a_steady_search_cannot_be_extended(table, tmp_path):
    finished(search(config(table, tmp_path, gens=1)))
    with pytest.raises(CheckpointError, match="steady_gens.*cannot be extended"):
        search(config(table, tmp_path, gens=2, resume=True))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="steady must be >= 0"):
        Config(steady=-1)
    with pytest.raises(ValueError, match="--rungs 1"):
        Config(steady=2, rungs=1)


def test_executors_take_tasks_fed_while_they_run(tmp_path):
    from exec_helpers import FakeTask, fake_eval, value

    feed = Feed([FakeTask("a", 1)])
    stream = SerialExecutor(fn=fake_eval).run(feed)
    got = [next(stream)["key"]]
    feed.add(FakeTask("b", 2))
    feed.add(FakeTask("c", 3))
    assert got + [r["key"] for r in stream] == ["a", "b", "c"]
    log = tmp_path / "starts"
    feed = Feed([FakeTask("a", 1, meta={"log": str(log)})])
    with ProcessExecutor(2, fn=fake_eval) as ex:
        stream = ex.run(feed)
        first = next(stream)
        feed.add(FakeTask("b", 2, meta={"log": str(log)}))
        for _ in range(200):  # a fed task starts at once, before the driver asks for the next result
            if log.read_text().split() == ["a", "b"]:
                break
            time.sleep(0.05)
        assert log.read_text().split() == ["a", "b"]
        rest = list(stream)
    assert first["key"] == "a" and [(r["key"], r["value"]) for r in rest] == [("b", value(2))]


@pytest.mark.slow
def test_a_live_steady_search_continues_from_saved_states(tmp_path, shakespeare_path):
    """Real trainings: promoted children continue from their saved early states (a missing state stops
    the search), and two workers give the serial result."""
    from evo.run import main

    serial = main(fast_config(tmp_path / "s", shakespeare_path, gens=2, steady=2))
    snap = read_snapshot(tmp_path / "s" / "out")
    promoted = [r for r in snap["lineage"] if r["role"] in ("promoted", "random")]
    assert promoted and all(r["target"] is not None for r in promoted)
    parallel = main(fast_config(tmp_path / "p", shakespeare_path, gens=2, steady=2, workers=2))
    assert outcome(serial, tmp_path / "s" / "out") == outcome(parallel, tmp_path / "p" / "out")
