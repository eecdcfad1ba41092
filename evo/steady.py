"""Steady-state co-evolution (`--steady N`): N evaluations in flight, no generation barrier.

Generation 0 runs as in the generational search (it seeds the archive). After it the policy asks the
Runner for N slots (evo.runner's steady driver, with its virtual clock): whenever one frees, `ask`
starts a promoted child's continuation if one waits, else the early training of a new child bred
from the populations as they stand then.

Promotion is asynchronous successive halving (evo.promotion.AsyncHalving) with the females as the
judge. The males' population takes each child when it is judged. Every `offspring` judged children
make a generation: the predictor children of those matings join the females, who evolve on the
archive as it stands, and the generation is logged and checkpointed. The last generation is closed
once every task in flight has ended.
"""
from __future__ import annotations

import math

from evo.coevolution import CoEvolution
from evo.promotion import EARLY_ONLY, AsyncHalving


class SteadyCoEvolution(CoEvolution):
    """The co-evolution policy driven steady-state after its generation 0."""

    name = "coevolution-steady"

    def generations(self):
        """After generation 0: hand the Runner N slots (the plan ends; `ask` takes over)."""
        if self.cfg.gens and not self.exhausted:
            self._go_async()
        yield from ()

    @property
    def done(self) -> bool:
        return self._finished and (self.slots == 0 or self._drained)

    def _go_async(self) -> None:
        cfg = self.cfg
        recs = [r for r in self.ledger.records.values() if r.features is not None]
        self.window = recs[-cfg.offspring:]  # the last early-trained candidates, for promotion
        self.rule = AsyncHalving(cfg.promote, cfg.promote_random, cfg.offspring)
        self.queue: list[str] = []  # promoted children waiting for a slot
        self.children: dict = {}  # key -> the DEAP individual of a child
        self.pred_children: list = []  # predictor children not yet among the females
        self.total = cfg.gens * cfg.offspring
        self.born = self.judged = self.ticked = 0
        self.dirty = False  # something was absorbed since the last generation was closed
        self._drained = False
        self.champion = self.fem.champion() if self.fem else None
        self.slots = cfg.steady

    def ask(self):
        if not self.slots:
            return super().ask()
        if self.queue:
            return self.runner.task(self.ledger.records[self.queue.pop(0)], self.F, "full", "/full")
        if self.born >= self.total:
            return None
        g, i = self.born // self.cfg.offspring + 1, self.born % self.cfg.offspring
        ranked_m, ranked_f = self.mating_ranks(self.champion)
        child, pred = self.breed(g, i, ranked_m, ranked_f)
        self.born += 1
        self.children[child.key] = child
        if pred is not None:
            self.pred_children.append(pred)
        return self.runner.task(self.ledger.records[child.key], self.E, "early")

    def refused(self, task) -> None:
        """A task the budget has no room for: a child's early phase is never trained; a continuation
        stays promoted-but-waiting, and its state is released at the end."""
        if self.slots and task.phase != "early":
            self.queue.insert(0, task.record_key)

    def tell(self, task, rec) -> None:
        if not self.slots:
            return
        self.dirty = True
        if task.phase == "early":
            self._judge(rec)
        else:
            self.give_credit([rec.key])

    def drained(self) -> None:
        for key in self.queue:  # promoted, but the budget had no room for the continuation
            self.release([key])
        if self.dirty or self.ticked == 0:
            self._tick(self.ticked + 1)
        self._drained = True

    def _judge(self, rec) -> None:
        """A child's early phase ended: promote it or not, and let the males take it."""
        cfg = self.cfg
        if rec.early_done:
            self.window = (self.window + [rec])[-cfg.offspring:]
            judge = self.judge(self.champion)
            if judge is not None:
                scores = [float(x) if math.isfinite(x) else math.inf for x in self.fem.raw(judge, self.window)]
                rec.predicted = float(self.fem.predict_losses(judge, self.fem_archive(), [rec])[0])
            else:
                scores = [r.early_val for r in self.window]
                rec.predicted = rec.early_val
            rec.score = scores[-1]
            rec.role = self.rule.role(scores, [r.key for r in self.window])
            self.runner.decide(f"pred/{rec.key}", rec, str(judge) if judge is not None else "early-val-loss",
                               rec.predicted, rec.score)
            if rec.role == EARLY_ONLY:
                self.release([rec.key])
            else:
                self.queue.append(rec.key)
        if self.mode.males:
            self.males = self.rank_males(self.males + [self.children[rec.key]], self.champion)[: cfg.males]
        self.judged += 1
        if self.judged % cfg.offspring == 0 and self.judged < self.total:
            self.runner.defer(lambda g=self.judged // cfg.offspring: self._tick(g))

    def _tick(self, g: int) -> None:
        """Close generation g: the predictor children join the females, who evolve; log, checkpoint."""
        cfg = self.cfg
        if self.fem:
            self.fem.pop = self.fem.pop + self.pred_children
            self.pred_children = []
            self.fem.evolve(self.fem_archive(), max(1, cfg.pred_steps), cfg.females)
            self.champion = self.fem.champion()
        if self.mode.males and self.males:
            self.males = self.rank_males(self.males, self.champion)[: cfg.males]
        self.end_generation(g, self.champion)
        self.ticked, self.dirty = g, False
