"""The Runner: what every search method shares, in one place (docs/ARCHITECTURE.md).

A policy (evo.scheduler) decides which tasks to start; the Runner

- makes each task (`task`: its key, record, seed and state files; one place),
- admits it only if its cost, known before it runs, fits in --budget-flops with what is already
  spent and in flight (`fits`: the one budget rule; the first refusal ends all admission),
- replays it from the journal or runs it on the executor (results are journaled on arrival),
- books its result in the ledger, logs it to MLflow once (`log`) and tells the policy,
- and logs decisions, generations and snapshots for the policy, each once per search.

Two drivers: generational (`slots` 0: the tasks asked between two Nones run as one batch, results
told in the order asked) and steady-state (`slots` N: N tasks in flight on a virtual clock, results
told in clock order, so that every decision depends on the seed and N, never on the executor or
the workers; see docs/ALGORITHM.md "Steady-state scheduling").
"""
from __future__ import annotations

import heapq
import sys
import time

from evo.evaluate import EvalTask, final_phase
from evo.executors import Feed
from evo.genome import eval_seed
from evo.ledger import Evaluation, Ledger, staircase
from evo.seeding import seed_everything
from evo.space import duration, step_cost


class Runner:
    """Runs one policy: see the module docstring. `tracker` may be set after construction."""

    def __init__(self, cfg, preset, executor, tracker, ckpt, ledger: Ledger, resumed: bool = False, on_eval=None):
        self.cfg, self.preset, self.executor, self.tracker, self.ckpt = cfg, preset, executor, tracker, ckpt
        self.ledger = ledger
        self.resumed = resumed  # look up the child runs of a resumed search in MLflow
        self.exhausted = False  # a task did not fit in --budget-flops: nothing more starts
        self.wait_s = 0.0  # seconds the driver spent waiting for evaluations
        self.on_eval = on_eval or (lambda res: None)
        self.policy = None
        self._later: list | None = None  # side effects the steady driver runs once its slots are refilled
        self._stair: tuple | None = None  # the last point of the tracker's best-so-far staircase
        self._stair_points: dict[str, list] = {}  # task key -> the staircase points its booking added

    # -- tasks and the budget ---------------------------------------------------------------------
    def task(self, rec: Evaluation, steps: int, phase: str, suffix: str = "") -> EvalTask:
        """The task that trains `rec` to `steps` (from its saved state, if it has one); its key is
        the record's plus `suffix` (the journal's and the state file's name)."""
        key = rec.key + suffix
        return EvalTask(key=key, record=rec.key, genes=rec.genes, preset=self.preset, steps=steps,
                        seed=eval_seed(self.cfg.seed, rec.genes), data=self.cfg.data, device=self.cfg.device,
                        threads=self.cfg.threads, load_state=self._state_to_load(rec, key),
                        save_state=self.ckpt.state_path(key), phase=phase)

    def _state_to_load(self, rec: Evaluation, key: str) -> str | None:
        """The record's saved state, or None when it is gone (deleted, a lost disk): then the task
        trains from step 0 (the same seed gives the same result) and pays every step. The choice is
        journaled, so a resumed search makes it again."""
        path = rec.state_file
        if not path or self.ckpt.get(f"restart/{key}"):
            return None
        if self.cfg.table or "eval/" + key in self.ckpt or self.ckpt.state_available(path):  # lookups save none
            return path
        print(f"warning: the saved training state {path} is missing; {key} is trained from step 0 "
              f"instead (same result, more compute)", file=sys.stderr)
        self.ckpt.record(f"restart/{key}", True)
        return None

    def done_steps(self, task: EvalTask) -> int:
        """Steps already trained that `task` continues from (a continuation pays only its own)."""
        rec = self.ledger.records[task.record_key]
        return rec.result["steps"] if task.load_state and rec.result else 0

    def cost(self, task: EvalTask) -> float:
        """What `task` will be charged, known before it runs."""
        return step_cost(self.cfg, self.preset, task.genes) * (task.steps - self.done_steps(task))

    def fits(self, cost: float, in_flight: float = 0.0) -> bool:
        """The budget rule: a task starts only if what is spent, in flight and its cost fit."""
        budget = self.cfg.budget_flops
        return not budget or self.ledger.compute["flops"] + in_flight + cost <= budget * (1 + 1e-12)

    def spent(self) -> bool:
        """True once a task was refused or the budget is used up: a method starts nothing more."""
        budget = self.cfg.budget_flops
        return self.exhausted or bool(budget) and self.ledger.compute["flops"] >= budget

    # -- the drivers ------------------------------------------------------------------------------
    def run(self, policy) -> None:
        """Seed the process's generators and drive `policy` until it is done."""
        seed_everything(self.cfg.seed, torch=False)
        self.attach(policy)
        while not policy.done:
            if policy.slots:
                self._steady(policy)
            else:
                self._batch(policy)

    def attach(self, policy) -> None:
        """Make `policy` the one this Runner asks and tells (and logs for)."""
        self.policy = policy
        policy.bind(self)

    def _batch(self, policy) -> None:
        tasks = []
        while (task := policy.ask()) is not None:
            tasks.append(task)
        self.run_tasks(tasks)

    def run_tasks(self, tasks: list[EvalTask]) -> None:
        """Run tasks as one batch: admit them in order (up to the first that does not fit), replay
        the journaled ones, run the rest on the executor, then book, log and tell them in order."""
        admitted, planned = [], 0.0
        for t in tasks:
            cost = None if self.exhausted else self.cost(t)
            if cost is None or not self.fits(cost, planned):
                self.exhausted = True
                self.policy.refused(t)
                continue
            planned += cost
            admitted.append(t)
        by_key = {t.key: t for t in admitted}
        done = {t.key: self.ckpt.evaluation(t, None) for t in admitted if "eval/" + t.key in self.ckpt}
        results = iter(self.executor.run([t for t in admitted if t.key not in done]))
        while True:
            t0 = time.perf_counter()
            res = next(results, None)
            self.wait_s += time.perf_counter() - t0  # the driver idles while trainings run
            if res is None:
                break
            done[res["key"]] = res = self.ckpt.evaluation(by_key[res["key"]], lambda res=res: res)
            self.on_eval(res)
        for t in admitted:  # in task order, so logging and bookkeeping never depend on arrival order
            rec, before = self.book(t, done[t.key])
            self.log(rec, t, done[t.key], before)
            self.policy.tell(t, rec)

    def _steady(self, policy) -> None:
        """N = policy.slots tasks in flight; each result is taken at its end on the virtual clock (a
        task lasts its estimated compute from the moment its slot freed). A result that arrives
        before its turn is journaled at once and waits. Logging waits until the slots are refilled,
        so the workers train while the driver logs."""
        slots = [0.0] * policy.slots  # a heap of the virtual times at which idle slots freed
        flight: list = []  # a heap of (virtual end, sequence, cost, task)
        feed, fed, arrived = Feed(), {}, {}
        stream = iter(self.executor.run(feed))
        now, seq = 0.0, 0
        self._later = []
        try:
            while True:
                while slots and not self.exhausted:
                    task = policy.ask()
                    if task is None:
                        break
                    cost = self.cost(task)
                    if not self.fits(cost, sum(c for _, _, c, _ in flight)):
                        self.exhausted = True
                        policy.refused(task)
                        break
                    start = max(heapq.heappop(slots), now)
                    span = duration(self.cfg, self.preset, task, cost, self.done_steps(task))
                    heapq.heappush(flight, (start + span, seq, cost, task))
                    seq += 1
                    if "eval/" + task.key not in self.ckpt:
                        feed.add(task)
                        fed[task.key] = task
                while self._later:  # with the slots refilled, the workers train while the driver logs
                    self._later.pop(0)()
                if not flight:
                    break
                now, _, _, task = heapq.heappop(flight)
                res = self._arrival(task, stream, fed, arrived)
                rec, before = self.book(task, res)
                self._later.append(lambda rec=rec, task=task, res=res, before=before: self.log(rec, task, res, before))
                heapq.heappush(slots, now)
                policy.tell(task, rec)
        finally:
            stream.close()  # a failed run: nothing of it keeps running
            self._later = None
        policy.drained()

    def _arrival(self, task: EvalTask, stream, fed: dict, arrived: dict) -> dict:
        """The task's result: replayed from the journal, or taken from the executor (journaled on
        arrival, so nothing computed is lost; those that come before their turn wait in `arrived`)."""
        if task.key not in fed:
            return self.ckpt.evaluation(task, None)
        while task.key not in arrived:
            t0 = time.perf_counter()
            res = next(stream)
            self.wait_s += time.perf_counter() - t0
            arrived[res["key"]] = res = self.ckpt.evaluation(fed[res["key"]], lambda res=res: res)
            self.on_eval(res)
        del fed[task.key]
        return arrived.pop(task.key)

    # -- booking and logging ----------------------------------------------------------------------
    def book(self, task: EvalTask, res: dict) -> tuple[Evaluation, int]:
        """Book a result in the ledger (and the early features the policy keeps); returns the record
        and the step its previous phase reached (-1: none)."""
        rec = self.ledger.records[task.record_key]
        before = rec.result["steps"] if rec.result else -1
        self.ledger.absorb(rec, task, res)
        if task.phase == "early" and rec.early_done:
            rec.features = self.policy.features(rec)
        best, unit = self.ledger.best(), getattr(self.tracker, "cost_step", None)
        if best is not None and unit:  # the best so far against the cost spent by now (a tracker that logs it)
            step = int(round(self.ledger.compute["flops"] / unit))
            self._stair_points[task.key], self._stair = staircase(self._stair, step, best.target)
        return rec, before

    def log(self, rec: Evaluation, task: EvalTask, res: dict, before: int = -1) -> None:
        """One trained phase to MLflow, once per search (the journal remembers its child run)."""
        def write():
            run_id = rec.run_id or (self.tracker.find_child(rec.key) if self.resumed else None)
            return self.tracker.log_phase(
                rec.key, res, phase=task.phase, outcome=self.policy.every_phase_is_outcome or final_phase(task.phase),
                genes=task.genes if before < 0 else None, seed=task.seed, generation=rec.generation, role=rec.role,
                parents=rec.parents, method=self.policy.method, run_id=run_id, after_step=before,
                **self.policy.log_extras(rec, task))
        rec.run_id = self.ckpt.once(f"log/{task.key}", write)
        points = self._stair_points.pop(task.key, None)
        if points:
            self.ckpt.once(f"best/{task.key}", lambda: self.tracker.log_best_so_far(points) or True)

    def defer(self, fn) -> None:
        """Run a side effect now, or once the steady driver has refilled its slots."""
        if self._later is not None:
            self._later.append(fn)
        else:
            fn()

    def decide(self, event: str, rec: Evaluation, judge: str | None = None, predicted=None, score=None) -> None:
        """Log a decision about `rec` (its role now, and who judged it) once per search."""
        role = rec.role
        self.defer(lambda: self.ckpt.once(event, lambda: self.tracker.log_decision(
            rec.key, rec.run_id, role, judge, predicted, score)))

    def log_generation(self, n: int, row: dict) -> None:
        """A point of the parent run's per-generation (or per-training) metrics, once per search."""
        self.ckpt.once(f"gen/{n}", lambda: self.tracker.log_generation(n, row) or True)

    def snapshot(self) -> None:
        self.ckpt.snapshot(self.policy.state())
