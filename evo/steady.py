"""Steady-state scheduling (`--steady N`): N evaluations in flight, no generation barrier.

Generation 0 runs as in the generational search (it seeds the archive). After it, whenever one of
the N slots frees, it starts the next task at once: a promoted child's continuation if one waits,
else the early training of a new child bred from the populations as they stand then.

Determinism: results are taken in the order of a virtual clock, not in the order they arrive. A task
lasts its estimated compute, known before it runs (`_duration`: its training FLOPs, the cost
--budget-flops charges, plus its evaluations' forward FLOPs), from the moment its slot freed, so the order of events, and with it every decision, depends only on the seed
and N: the same on any executor and any number of real workers. A result that arrives before its
turn is journaled at once and waits; its worker starts the next task already fed, if any.

Promotion is asynchronous successive halving's rule with the females as the judge: a child whose
early phase ends is promoted when the current champion ranks it among the best `promote` of the last
`offspring` early-trained candidates (re-scored by her), or else at random with probability
promote_random / offspring. The males' population takes each child when it is judged. Every
`offspring` judged children make a generation: the predictor children of those matings join the
females, who evolve on the archive as it stands, and the generation is logged and checkpointed. The
last generation is closed once every task in flight has ended.
"""
from __future__ import annotations

import heapq
import math
import random
import time

from evo.executors import Feed


class Steady:
    """The event loop of one steady-state search, run on a Search after its generation 0."""

    def __init__(self, search):
        self.s, self.cfg = search, search.cfg
        recs = [r for r in search.ledger.records.values() if r.features is not None]
        self.window = recs[-self.cfg.offspring:]  # the last early-trained candidates, for promotion
        self.queue: list[str] = []  # promoted children waiting for a slot
        self.children: dict = {}  # key -> the DEAP individual of a child
        self.pred_children: list = []  # predictor children not yet among the females
        self.born = self.judged = self.ticked = 0
        self.dirty = False  # something was absorbed since the last generation was closed
        self.later: list = []  # logging and generation closing, done once the slots are refilled
        self.champion = search.fem.champion() if search.fem else None

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        s, cfg = self.s, self.cfg
        total = cfg.gens * cfg.offspring
        slots = [0.0] * cfg.steady  # a heap of the virtual times at which idle slots freed
        flight: list = []  # a heap of (virtual end, sequence, cost, task)
        feed, fed, arrived = Feed(), {}, {}
        stream = iter(s.executor.run(feed))
        now, seq = 0.0, 0
        try:
            while True:
                while slots and not s.exhausted:
                    task = self._next(total)
                    if task is None:
                        break
                    cost = s._cost(task)
                    if not self._fits(cost, flight):
                        s.exhausted = True
                        self._give_up(task)
                        break
                    start = max(heapq.heappop(slots), now)
                    heapq.heappush(flight, (start + self._duration(task, cost), seq, cost, task))
                    seq += 1
                    if "eval/" + task.key not in s.ckpt:
                        feed.add(task)
                        fed[task.key] = task
                while self.later:  # with the slots refilled, the workers train while the driver logs
                    self.later.pop(0)()
                if not flight:
                    break
                now, _, _, task = heapq.heappop(flight)
                res = self._result(task, stream, fed, arrived)
                booked = s._book(task, res)
                self.later.append(lambda booked=booked: s._log(*booked))
                self.dirty = True
                heapq.heappush(slots, now)
                if task.phase == "early":
                    self._judge(s.ledger.records[task.key], total)
                else:
                    s._credit([task.key.split("/")[0]])
        finally:
            stream.close()  # a failed run: nothing of it keeps running
        for key in self.queue:  # promoted, but the budget had no room for the continuation
            s._release([key])
        if self.dirty or self.ticked == 0:  # (the loop ran everything in `later` before it ended)
            self._tick(self.ticked + 1)

    def _next(self, total: int):
        """The task of the slot that frees now: a waiting continuation, else a new child."""
        s = self.s
        if self.queue:
            rec = s.ledger.records[self.queue.pop(0)]
            return s._task(rec.key + "/full", rec.genes, s.F, "full", load=rec.state_file)
        if self.born >= total:
            return None
        g, i = self.born // self.cfg.offspring + 1, self.born % self.cfg.offspring
        ranked_m = s._rank_males(s.males, self.champion) if s.males else []
        ranked_f = s.fem.mating_order(s.fem.ranked(s.fem.pop), s.credit, self.cfg.credit) if s.fem else []
        child, pred = s._breed(g, i, ranked_m, ranked_f)
        self.born += 1
        self.children[child.key] = child
        if pred is not None:
            self.pred_children.append(pred)
        return s._task(child.key, s.ledger.records[child.key].genes, s.E, "early")

    def _duration(self, task, cost: float) -> float:
        """The task's length on the virtual clock: its training FLOPs plus the forward FLOPs of the
        evaluations it runs (a third of a training token's per token, over the preset's fixed
        windows; 35-45% of an early training's time on the tiny preset). A table's tasks last their cost."""
        if self.cfg.table:
            return cost
        s = self.s
        _, tc = s.preset.configs(task.genes, vocab_size=2)  # the schedule only; the vocabulary does not matter
        done = s._done_steps(task)
        evals = sum(tc.evaluates_at(k) or k == task.steps for k in range(done + 1, task.steps + 1)) + (done == 0)
        windows = s.preset.n_val_windows + s.preset.n_train_eval_windows
        per_step = cost / max(1, task.steps - done)  # B x T tokens of 6N; an evaluation: windows x T of 2N
        return cost + evals * per_step * windows / (3 * tc.batch_size)

    def _fits(self, cost: float, flight: list) -> bool:
        budget = self.cfg.budget_flops
        planned = self.s.ledger.compute["flops"] + sum(c for _, _, c, _ in flight)
        return not budget or planned + cost <= budget * (1 + 1e-12)

    def _give_up(self, task) -> None:
        """A task the budget has no room for: its child was bred but is never trained."""
        if task.phase != "early":
            self.queue.insert(0, task.key.split("/")[0])

    def _result(self, task, stream, fed: dict, arrived: dict) -> dict:
        """The task's result: replayed from the journal, or taken from the executor (journaled on
        arrival, so nothing computed is lost; those that come before their turn wait in `arrived`)."""
        s = self.s
        if task.key not in fed:
            return s.ckpt.evaluation(task, None)
        while task.key not in arrived:
            t0 = time.perf_counter()
            res = next(stream)
            s.wait_s += time.perf_counter() - t0
            arrived[res["key"]] = res = s.ckpt.evaluation(fed[res["key"]], lambda res=res: res)
            s.on_eval(res)
        del fed[task.key]
        return arrived.pop(task.key)

    # -- decisions --------------------------------------------------------------------------------
    def _judge(self, rec, total: int) -> None:
        """A child's early phase ended: promote it or not, and let the males take it."""
        s, cfg = self.s, self.cfg
        if rec.early_done:
            self.window = (self.window + [rec])[-cfg.offspring:]
            judge = s._judge(self.champion)
            if judge is not None:
                scores = [float(x) if math.isfinite(x) else math.inf for x in s.fem.raw(judge, self.window)]
                rec.predicted = float(s.fem.predict_losses(judge, s.fem_archive(), [rec])[0])
            else:
                scores = [r.early_val for r in self.window]
                rec.predicted = rec.early_val
            rec.score = scores[-1]
            order = sorted(zip(scores, (r.key for r in self.window)))
            rank = order.index((rec.score, rec.key))
            draw = random.random()  # drawn for every child, so the stream does not depend on the ranks
            rec.role = ("promoted" if rank < cfg.promote else
                        "random" if draw < cfg.promote_random / cfg.offspring else "early-only")
            name, role, predicted, score = (str(judge) if judge is not None else "early-val-loss", rec.role,
                                            rec.predicted, rec.score)
            self.later.append(lambda: s.ckpt.once(f"pred/{rec.key}", lambda: s.tracker.log_decision(
                rec.key, rec.run_id, role, name, predicted, score)))
            if rec.role == "early-only":
                s._release([rec.key])
            else:
                self.queue.append(rec.key)
        if cfg.mode in ("male", "combined"):
            s.males = s._rank_males(s.males + [self.children[rec.key]], self.champion)[: cfg.males]
        self.judged += 1
        if self.judged % cfg.offspring == 0 and self.judged < total:
            self.later.append(lambda g=self.judged // cfg.offspring: self._tick(g))

    def _tick(self, g: int) -> None:
        """Close generation g: the predictor children join the females, who evolve; log, checkpoint."""
        s, cfg = self.s, self.cfg
        if s.fem:
            s.fem.pop = s.fem.pop + self.pred_children
            self.pred_children = []
            s.fem.evolve(s.fem_archive(), max(1, cfg.pred_steps), cfg.females)
            self.champion = s.fem.champion()
        if cfg.mode in ("male", "combined") and s.males:
            s.males = s._rank_males(s.males, self.champion)[: cfg.males]
        s._end_generation(g, self.champion)
        self.ticked, self.dirty = g, False
