"""What every executor shares: the feed of tasks a running executor takes, and calling the evaluation.

evo.executors (serial and process pools) and evo.dask_executor both build on it; it imports neither.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Callable, Iterable

from models.data import SetupError  # light: models.data imports torch only when it makes tensors

if TYPE_CHECKING:
    from evo.evaluate import EvalTask


def default_fn() -> Callable:
    """The real evaluation (imported lazily so that light workers do not import torch)."""
    from evo.evaluate import evaluate

    return evaluate


class Feed:
    """Tasks handed to a running `executor.run` while it runs (a steady-state search): the driver
    adds tasks between the results it takes, and the executor picks them up at its next turn. A
    plain list of tasks is a feed that never grows."""

    def __init__(self, tasks: Iterable[EvalTask] = ()):
        self._tasks, self._taken = list(tasks), 0
        self.notify = None
        """set by a running executor that can start a task at once (to an idle worker), between results"""

    def add(self, task: EvalTask) -> None:
        self._tasks.append(task)
        if self.notify is not None:
            self.notify()

    def take(self) -> list:
        """The tasks added since the last call."""
        new, self._taken = self._tasks[self._taken:], len(self._tasks)
        return new


def feed_of(tasks) -> Feed:
    return tasks if isinstance(tasks, Feed) else Feed(tasks)


def failed_result(task, error: str) -> dict:
    """The result of an evaluation that could not run: worst fitness, never retried again."""
    return {"key": task.key, "error": error, "diverged": False, "phase": task.phase}


def call(fn: Callable, task) -> dict:
    """fn(task), with an out-of-memory error turned into a failed result for this task alone."""
    try:
        res = fn(task)
    except Exception as e:  # anything else is a bug or a SetupError and propagates
        if isinstance(e, SetupError) or "out of memory" not in str(e).lower():
            raise
        res = failed_result(task, f"{type(e).__name__}: {e}")
    if "out of memory" in str(res.get("error") or "").lower():
        torch = sys.modules.get("torch")  # hand the cached blocks back before the next genome
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    return res
