"""The scheduler interface: a search method is a policy that the Runner asks for tasks and tells results.

In the spirit of Optuna's samplers and pruners and syne-tune's schedulers, a policy decides and the
Runner (evo.runner) does everything else: budget admission, journal replay, executors, the ledger,
MLflow, snapshots. A policy

- `ask()`: returns the next task to start (an EvalTask made with `runner.task`), or None when it has
  nothing to start until a result comes back (or at all: then `done` is true);
- `tell(task, rec)`: hears that `task` finished, booked on its record `rec` (in the ledger);
- `refused(task)`: hears that the budget had no room for `task` (it never ran, nothing more will);
- `drained()`: hears that nothing is in flight and `ask` had nothing more (the steady driver's end);
- `state()`: returns what the checkpoint stores of it (JSON-able).

`slots` picks the driver: 0 runs the tasks asked between two Nones as one batch (a generation) and
tells their results in the order asked; N > 0 keeps N tasks in flight on a virtual clock and tells
each result in clock order (evo.runner). A policy may change `slots` between batches.

Most methods are easiest to write as a plan: a generator that yields tasks and yields WAIT to wait
for every task yielded so far (`Planned`). The plan reads results from the ledger when it resumes.
"""
from __future__ import annotations

from typing import Iterator

WAIT = None
"""yielded by a plan: run the tasks yielded so far, then resume the plan with their results booked"""


class Scheduler:
    """Base class of every search method (a policy on the Runner)."""

    name = "scheduler"
    method: str | None = None
    """logged on each child run as `dimorph.method` (the peers), None for the co-evolution modes"""
    every_phase_is_outcome = False
    """log every phase's best/final losses (the peers' rungs), not only the full budget's"""
    slots = 0

    def bind(self, runner) -> None:
        """Called once by the Runner before the first `ask`."""
        self.runner = runner

    @property
    def done(self) -> bool:
        raise NotImplementedError

    def ask(self):
        raise NotImplementedError

    def tell(self, task, rec) -> None:
        pass

    def refused(self, task) -> None:
        pass

    def drained(self) -> None:
        pass

    def log_extras(self, rec, task) -> dict:
        """Extra keyword arguments for the tracker's log of this phase (features, lineage, ...)."""
        return {}

    def features(self, rec) -> dict | None:
        """The early-curve features to keep on a record whose first phase below the full budget
        ended (None: this method does not use them)."""
        return None

    def state(self) -> dict:
        return {}


class Planned(Scheduler):
    """A policy written as a plan: `plan()` yields tasks, and WAIT to wait for their results."""

    _plan: Iterator | None = None
    _finished = False

    def plan(self) -> Iterator:
        raise NotImplementedError

    @property
    def done(self) -> bool:
        return self._finished

    def ask(self):
        if self._finished:
            return None
        if self._plan is None:
            self._plan = self.plan()
        try:
            return next(self._plan)
        except StopIteration:
            self._finished = True
            return None
