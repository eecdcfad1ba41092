"""Executors: where the pure evaluation runs. Each yields results as they finish; the driver logs them."""
from __future__ import annotations

from typing import Iterable, Iterator

from evo.evaluate import EvalTask, evaluate


class SerialExecutor:
    """Evaluate in this process, one task after another."""

    def run(self, tasks: Iterable[EvalTask]) -> Iterator[dict]:
        for task in tasks:
            yield evaluate(task)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_executor(cfg) -> SerialExecutor:
    """The executor the config asks for."""
    return SerialExecutor()
