"""The ledger's rules on hand-made phases (compute, failures, best, history, state files), and the
engine's use of it: no state file left behind, an empty archive after failed bootstraps."""
import math
import os
from pathlib import Path

import pytest

from evo.config import Config
from evo.engine import Search
from evo.evaluate import EvalTask
from evo.executors import SerialExecutor
from evo.ledger import Ledger
from evo.report import best_numbers
from evo.table import TableEvaluator, load_table
from evo.tablestats import MemoryCheckpoint, NullTracker
from tests.table_helpers import make_table

F = 100


class Phases:
    """Tasks and results of hand-made phases; each phase writes a real state file under `dir`."""

    def __init__(self, d: Path):
        self.dir = d

    def path(self, name: str) -> str:
        return str(self.dir / f"{name}.pt")

    def task(self, key: str, steps: int, load: str | None = None, save: str | None = None) -> EvalTask:
        save = save or self.path(f"{key.split('/')[0]}-s{steps}")
        Path(save).write_text("state")
        return EvalTask(key=key, genes={}, preset=None, steps=steps, seed=0, load_state=load, save_state=save)

    @staticmethod
    def ok(steps: int, best: float, flops_per_step: float = 10.0, seconds: float = 1.0) -> dict:
        return {"steps": steps, "flops": flops_per_step * steps, "eval_seconds": seconds, "error": None,
                "diverged": False, "val_losses": [best + 0.5, best], "best_val_loss": best}

    @staticmethod
    def diverged(steps: int, flops_per_step: float = 10.0) -> dict:
        return {"steps": steps, "flops": flops_per_step * steps, "eval_seconds": 1.0, "error": None,
                "diverged": True, "val_losses": [3.0, None], "best_val_loss": 3.0}

    @staticmethod
    def crashed() -> dict:
        return {"error": "RuntimeError: out of memory", "diverged": False, "eval_seconds": 0.5}


@pytest.fixture
def ph(tmp_path):
    return Phases(tmp_path)


def files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def early_then_full(led: Ledger, ph: Phases, key: str, early_res: dict, full_res: dict | None):
    rec = led.new(key, {"k": key})
    led.absorb(rec, ph.task(key, 10), early_res)
    if full_res is not None:
        led.absorb(rec, ph.task(key + "/full", F, load=rec.state_file), full_res)
    return rec


def test_a_continuation_is_charged_only_its_own_flops(ph):
    led = Ledger(F)
    rec = led.new("a", {})
    assert rec.pending and rec.status == "pending"
    led.absorb(rec, ph.task("a", 10), ph.ok(10, 2.5))
    assert led.compute == {"flops": 100.0, "seconds": 1.0, "early_trainings": 1, "full_trainings": 0,
                           "trainings": 1}
    assert rec.early_done and rec.target is None and rec.early_val == 2.5 and not led.history
    led.absorb(rec, ph.task("a/full", F, load=rec.state_file), ph.ok(F, 2.0, seconds=4.0))
    assert led.compute == {"flops": 1000.0, "seconds": 5.0, "early_trainings": 1, "full_trainings": 1,
                           "trainings": 2}
    assert rec.fully_trained and rec.status == "full" and rec.target == 2.0 and rec.result is rec.full
    # no features (a peer's record): best, but not in the females' archive
    assert led.best() is rec and led.archive == [] and led.trained == [rec]
    assert led.history == [{"flops": 1000.0, "full_trainings": 1, "best_val_loss": 2.0}]
    # ASHA-style rungs: each rung pays the difference to the previous one
    b = led.new("b", {})
    for steps in (10, 30, F):
        led.absorb(b, ph.task("b", steps, load=b.state_file), ph.ok(steps, 1.5, flops_per_step=20.0))
    assert led.compute["flops"] == 1000.0 + 20.0 * F
    assert (led.compute["early_trainings"], led.compute["full_trainings"]) == (3, 2)


def test_failed_early_phases_count_once_and_keep_nothing(ph):
    led = Ledger(F)
    crashed = early_then_full(led, ph, "c", ph.crashed(), None)
    assert led.compute == {"flops": 0.0, "seconds": 0.5, "early_trainings": 1, "full_trainings": 0,
                           "trainings": 1}  # an error result carries no FLOPs
    assert crashed.failed and crashed.status == "failed" and not crashed.early_done
    assert crashed.target == math.inf and crashed.early_val == math.inf
    diverged = early_then_full(led, ph, "d", ph.diverged(10), None)
    assert led.compute["flops"] == 100.0 and led.compute["early_trainings"] == 2  # diverged: paid for
    assert diverged.failed and diverged.target == math.inf
    assert files(ph.dir) == [] and led.best() is None and led.history == []  # their states are gone


def test_a_failed_full_training_counts_and_leaves_the_best_alone(ph):
    led = Ledger(F)
    good = early_then_full(led, ph, "g", ph.ok(10, 2.6), ph.ok(F, 2.0))
    bad = early_then_full(led, ph, "b", ph.ok(10, 2.2), ph.crashed())
    assert led.compute["full_trainings"] == 2 and led.compute["early_trainings"] == 2
    assert led.compute["flops"] == 100.0 + 900.0 + 100.0  # the crashed continuation is charged nothing
    assert bad.failed and bad.target == math.inf and not bad.fully_trained and bad.early_val == 2.2
    assert led.best() is good and led.trained == [good]
    assert [h["best_val_loss"] for h in led.history] == [2.0, 2.0]  # a point after each full training
    assert [h["full_trainings"] for h in led.history] == [1, 2]
    assert files(ph.dir) == ["g-s100.pt"]  # b's early state was spent, its failed final state removed
    assert led.best_state == ph.path("g-s100") and led.best_entry()["state"] == led.best_state


def test_best_is_the_lowest_target_and_the_first_to_finish_on_ties(ph):
    led = Ledger(F)
    assert led.best() is None and led.best_entry() is None
    a = early_then_full(led, ph, "a", ph.ok(10, 3.0), ph.ok(F, 2.5))
    b = early_then_full(led, ph, "b", ph.ok(10, 3.0), ph.ok(F, 2.1))
    c = early_then_full(led, ph, "c", ph.ok(10, 3.0), ph.ok(F, 2.1))
    d = early_then_full(led, ph, "d", ph.ok(10, 3.0), ph.ok(F, 2.4))
    assert led.best() is b and led.trained == [a, b, c, d]
    assert led.best_entry() == {"key": "b", "genes": {"k": "b"}, "target": 2.1, "run_id": None,
                                "state": ph.path("b-s100")}
    assert [h["best_val_loss"] for h in led.history] == [2.5, 2.1, 2.1, 2.1]


def test_every_training_history_and_state_files_follow_the_best(ph):
    led = Ledger(F, every_training=True)
    a = led.new("a", {})
    led.absorb(a, ph.task("a", F), ph.ok(F, 2.5))  # a straight full training
    assert files(ph.dir) == ["a-s100.pt"] and led.best_state == ph.path("a-s100")
    b = led.new("b", {})
    led.absorb(b, ph.task("b", 10), ph.ok(10, 2.9))
    assert files(ph.dir) == ["a-s100.pt", "b-s10.pt"]  # a rung state waits for its continuation
    assert len(led.history) == 2 and led.history[-1]["best_val_loss"] == 2.5
    led.absorb(b, ph.task("b", F, load=b.state_file), ph.ok(F, 2.0))
    assert files(ph.dir) == ["b-s100.pt"]  # b's rung state spent; b beats a, whose state goes
    assert led.best_state == ph.path("b-s100") and a.state_file is None
    c = led.new("c", {})
    led.absorb(c, ph.task("c", F), ph.ok(F, 2.7))
    assert files(ph.dir) == ["b-s100.pt"]  # beaten at once
    d = led.new("d", {})
    led.absorb(d, ph.task("d", 10), ph.ok(10, 3.3))
    led.release(d)  # pruned: no continuation will come
    led.release(b)  # the kept state is never released
    assert files(ph.dir) == ["b-s100.pt"] and d.state_file is None and d.early_done
    assert [h["full_trainings"] for h in led.history] == [1, 1, 2, 3, 3]


# -- the engine on a table ------------------------------------------------------------------------
class Lookup:
    """A table evaluator that writes and reads state files like the trainer, and fails `fail(task)`."""

    def __init__(self, table: str, fail=lambda task: False):
        self.table, self.fail, self.calls = TableEvaluator(table), fail, []

    def __call__(self, task):
        self.calls.append(task.key)
        if task.load_state:
            assert os.path.exists(task.load_state), task.load_state  # a continuation needs its state
        if self.fail(task):
            return {"key": task.key, "phase": task.phase, "error": "worker died 3 times", "diverged": False,
                    "eval_seconds": 0.0}
        Path(task.save_state).write_text(task.key)
        return self.table(task)


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> str:
    return str(make_table(tmp_path_factory.mktemp("t"), n=40))


def search(table, out, fn, **kw) -> Search:
    from evo.checkpoint import Checkpoint

    cfg = Config(table=table, seed=1, workers=0, progress=False, out=str(out), females=8, pred_steps=1,
                 **{"start": "full", **kw})  # generation 0 as the full start trains it
    ckpt = Checkpoint(cfg.out_dir, cfg.search_fields(), resume=False)
    return Search(cfg, SerialExecutor(fn=fn), NullTracker(), ckpt=ckpt)


def test_no_state_file_is_left_behind_when_males_exceed_the_bootstrap(table, tmp_path):
    fn = Lookup(table)
    s = search(table, tmp_path / "out", fn, mode="male", gens=2, bootstrap=3, males=6, offspring=3,
               promote=1, promote_random=1)
    s.run()
    s.ckpt.close()
    assert any(k.startswith("g0-i") for k in fn.calls)  # early-trained extra males
    best = s.ledger.best()
    assert files(s.ckpt.states) == [f"{best.key}_full.pt"]
    assert s.state()["best"]["state"] == str(s.ckpt.states / f"{best.key}_full.pt")


@pytest.mark.parametrize("mode", ["combined", "female"])
def test_an_empty_archive_after_failed_bootstraps_ends_cleanly(table, tmp_path, mode):
    from evo.run import _summary, format_summary

    fn = Lookup(table, fail=lambda task: task.phase == "full")  # every continuation is lost
    s = search(table, tmp_path / "out", fn, mode=mode, gens=2, bootstrap=3, males=4, offspring=3,
               promote=1, promote_random=1)
    s.run()
    s.ckpt.close()
    led = s.ledger
    assert led.archive == [] and led.best() is None and s.state()["best"] is None
    assert led.compute["full_trainings"] == 3 + 2 * 2 and led.compute["flops"] > 0
    assert all(r.failed for r in led.records.values() if r.full is not None)
    assert files(s.ckpt.states) == []
    assert best_numbers(s, measure=False) == {}

    class Tracker:
        run_id, experiment, uri = "r", "e", "sqlite:///x.db"

    text = format_summary(_summary(s, Tracker(), {}))
    assert "no architecture finished training (all diverged or failed)" in text
    assert "7 full and" in text


def test_without_an_archive_the_early_loss_promotes_until_one_exists(table, tmp_path):
    fn = Lookup(table, fail=lambda task: task.key.startswith("g0-") and task.phase == "full")
    s = search(table, tmp_path / "out", fn, mode="combined", gens=2, bootstrap=3, males=4, offspring=3,
               promote=1, promote_random=0)
    s.run()
    s.ckpt.close()
    recs = s.ledger.records
    g1 = [recs[f"g1-c{i}"] for i in range(3)]
    promoted = [r for r in g1 if r.role == "promoted"]
    assert len(promoted) == 1 and promoted[0].predicted == promoted[0].early_val  # judged by early loss
    assert promoted[0].early_val == min(r.early_val for r in g1)  # (a failed early phase: inf)
    assert s.ledger.best() is not None and s.ledger.best().generation >= 1
    t = load_table(table)
    assert s.ledger.best().target == pytest.approx(min(t.targets[t.row_of(r.genes)] for r in s.ledger.archive))


def test_the_best_so_far_staircase_is_flat_then_drops_and_its_steps_only_grow():
    from evo.ledger import staircase

    last, out = None, []
    for step, best in [(5, math.inf), (10, 3.0), (12, 3.0), (20, 2.5), (20, 2.4), (21, 2.4), (22, 2.4), (30, 2.0)]:
        pts, last = staircase(last, step, best)
        out += pts
    # no point before a finite best; flat points; (19, 3.0) before the drop at 20; a second drop on
    # step 20 goes to 21; a repeat on 21 is dropped; (29, 2.4) holds the line flat up to the drop at 30
    assert out == [(10, 3.0), (12, 3.0), (19, 3.0), (20, 2.5), (21, 2.4), (22, 2.4), (29, 2.4), (30, 2.0)]
    assert last == (30, 2.0)
