"""What a search knows about its evaluations: one record per architecture and one ledger of them.

An `Evaluation` goes through phases: pending (created, nothing trained), early (trained to a budget
below the full one: the engine's early phase, an ASHA rung), fully trained (trained to the full
budget, by a continuation or in one go), or failed (a phase crashed or diverged: final, the worst
fitness). The `Ledger` is shared by the engine and every peer method; it holds the records, the
archive, the compute spent, the history and the state files, with one set of rules:

- compute: a phase is charged the FLOPs of its result minus those of the same evaluation's previous
  phase (a continuation from its saved state pays only its own steps; one whose state was lost
  trains from step 0 and pays all); a result with an `error` carries no FLOPs and is charged none;
  seconds are charged as reported.
- counts: every phase that ran counts once, failed or not (it was paid for): in `full_trainings`
  when it was to reach the full budget, else in `early_trainings`; `trainings` counts both.
- history: a point (FLOPs, full trainings, best target so far) after every full-budget phase, or
  after every phase for searches that decide between phases (`every_training`, the peers).
- state files: a phase continued from a state spends it; the state of a phase that failed or
  reached the full budget is kept only while it is the best fully trained architecture's; an early
  state waits for a continuation until `release` says none will come.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from evo.evaluate import EvalTask, failed

INF = float("inf")


def staircase(last: tuple[int, float] | None, step: int, best: float) -> tuple[list[tuple[int, float]], tuple]:
    """The points that draw best-so-far against cumulative cost as a staircase on a line chart, at an
    evaluation that completes at cost `step` (an integer) with `best` the best target so far; `last`
    is the previous point (None: none yet). Returns the new points and the new last point: (step,
    best) at each evaluation; before an improvement also (step - 1, the old best), so the line stays
    flat up to it and then drops. Steps only grow: a point that lands on the last one's step goes one
    step later when it improves on it, and is dropped when it does not."""
    if not math.isfinite(best):
        return [], last
    if last is None:
        return [(step, best)], (step, best)
    last_step, last_best = last
    if step <= last_step:
        if best >= last_best:
            return [], last
        step = last_step + 1
    points = [(step - 1, last_best)] if best < last_best and step - 1 > last_step else []
    points.append((step, best))
    return points, (step, best)


@dataclass
class Evaluation:
    """One architecture of a search and every phase trained for it."""

    key: str
    genes: dict
    generation: int | None = None
    role: str = ""
    """baseline, bootstrap, init, child, promoted, random, early-only, trial, pruned@<steps>, ..."""
    parents: list[str] = field(default_factory=list)
    female: str | None = None
    """the formula of the female whose pair produced this architecture (the lineage's other half)"""
    female_child: str | None = None
    """the formula of the predictor child of the same mating"""
    early: dict | None = None
    """the result (an executor's dict) of the latest phase below the full budget"""
    full: dict | None = None
    """the result of the phase that reached the full budget (failed or not)"""
    screen: dict | None = None
    """the result of the first phase below the full budget (the early phase all candidates get)"""
    features: dict | None = None
    """early-curve features (primitives.features), when the early phase did not fail"""
    target: float | None = None
    """best val loss over the full budget; inf once a phase failed; None until then"""
    score: float | None = None
    """the ranker's raw score at promotion (lower is promoted first)"""
    predicted: float | None = None
    """that score shown as a loss"""
    run_id: str | None = None
    state_file: str | None = None
    """the saved state of the latest phase, while it is kept"""

    @property
    def result(self) -> dict | None:
        """The latest phase's result."""
        return self.full or self.early

    @property
    def failed(self) -> bool:
        return any(r is not None and failed(r) for r in (self.early, self.full))

    @property
    def pending(self) -> bool:
        return self.early is None and self.full is None

    @property
    def early_done(self) -> bool:
        """Trained below the full budget without failing: a continuation may follow."""
        return self.early is not None and self.full is None and not failed(self.early)

    @property
    def fully_trained(self) -> bool:
        return self.full is not None and not failed(self.full)

    @property
    def status(self) -> str:
        """pending | early | full | failed"""
        return ("failed" if self.failed else "full" if self.fully_trained else "early" if self.early_done
                else "pending")

    @property
    def early_val(self) -> float:
        """The last validation loss of the early phase (inf when it failed or is missing); a later
        rung below the full budget does not change it, so candidates are compared at one budget."""
        r = self.screen or self.early
        if not r or failed(r) or not r.get("val_losses"):
            return INF
        v = r["val_losses"][-1]
        return v if v is not None and math.isfinite(v) else INF


def records_from_rows(rows: list[dict]) -> list[Evaluation]:
    """Rows holding key, target, features (and maybe genes), e.g. a checkpoint's archive, as records."""
    return [Evaluation(key=r["key"], genes=r.get("genes") or {}, target=r["target"], features=r.get("features"))
            for r in rows]


class Ledger:
    """Records, archive, compute, history and state files of one search (see the module docstring)."""

    def __init__(self, full_steps: int, every_training: bool = False):
        self.full_steps = full_steps
        self.every_training = every_training
        self.records: dict[str, Evaluation] = {}
        self.archive: list[Evaluation] = []  # fully trained with features: the females' ground truth
        self.trained: list[Evaluation] = []  # fully trained with a finite target, in the order they finished
        self.compute = {"flops": 0.0, "seconds": 0.0, "early_trainings": 0, "full_trainings": 0, "trainings": 0}
        self.history: list[dict] = []
        self._kept: Evaluation | None = None  # the record whose final state is kept

    def new(self, key: str, genes: dict, generation: int | None = None, role: str = "", parents=()) -> Evaluation:
        assert key not in self.records, key
        rec = self.records[key] = Evaluation(key, genes, generation, role, list(parents))
        return rec

    def discard(self, key: str) -> None:
        """Forget a record that was never trained (its first task did not fit in the budget)."""
        assert self.records[key].pending, key
        del self.records[key]

    def absorb(self, rec: Evaluation, task: EvalTask, res: dict) -> None:
        """Book one finished phase of `rec` (trained by `task`): compute, result, target, archive,
        state files and history."""
        full = task.steps >= self.full_steps
        prev = rec.result
        before = (prev or {}).get("flops", 0.0) if task.load_state else 0.0  # a restart from step 0 pays all
        self.compute["flops"] += 0.0 if res.get("error") else res.get("flops", 0.0) - before
        self.compute["seconds"] += res.get("eval_seconds", 0.0)
        self.compute["full_trainings" if full else "early_trainings"] += 1
        self.compute["trainings"] += 1
        if full:
            rec.full = res
        else:
            rec.screen = rec.screen or res
            rec.early = res
        if failed(res):
            rec.target = INF
        elif full:
            rec.target = res["best_val_loss"]
        if rec.fully_trained and math.isfinite(rec.target):
            self.trained.append(rec)
            if rec.features is not None:
                self.archive.append(rec)
        _remove(task.load_state)  # continued from it: spent
        rec.state_file = task.save_state
        if full or failed(res):
            self._settle(rec)
        if full or self.every_training:
            best = self.best()
            self.history.append({"flops": self.compute["flops"], "full_trainings": self.compute["full_trainings"],
                                 "best_val_loss": best.target if best else INF})

    def best(self) -> Evaluation | None:
        """The fully trained record with the lowest target (ties: the first to finish)."""
        return min(self.trained, key=lambda r: r.target, default=None)

    def best_entry(self) -> dict | None:
        """The best record as the checkpoint stores it."""
        b = self.best()
        return b and {"key": b.key, "genes": b.genes, "target": b.target, "run_id": b.run_id,
                      "state": self.best_state}

    @property
    def best_state(self) -> str | None:
        """The kept state file: the best fully trained architecture's final state."""
        return self._kept.state_file if self._kept else None

    def release(self, rec: Evaluation) -> None:
        """`rec` will not be continued: delete its state file (unless it is the kept one)."""
        if rec is not self._kept:
            _remove(rec.state_file)
            rec.state_file = None

    def _settle(self, rec: Evaluation) -> None:
        """A finished or failed phase: keep its state if it is now the best, else delete it."""
        if self.best() is rec:
            if self._kept is not None and self._kept is not rec:
                _remove(self._kept.state_file)
                self._kept.state_file = None
            self._kept = rec
        else:
            self.release(rec)


def _remove(path: str | None) -> None:
    if path and os.path.exists(path):
        os.remove(path)
