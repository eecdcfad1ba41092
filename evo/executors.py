"""Executors: where the pure evaluation runs. Each yields results as they finish; the driver logs them.

SerialExecutor runs in this process, ProcessExecutor in local worker processes (optionally placed on
GPUs), DaskExecutor (evo/dask_executor.py) on a Dask cluster. All pass tasks through unchanged (each
fixes its own seed and thread count), so results do not depend on the executor. A worker that dies
costs the task it was running a retry; past `retries` the task comes back as a failed result. An
exception raised by the evaluation (a bug, or SetupError: an unusable environment or configuration)
is never retried: every executor stops the run and raises it in the driver, as its own class.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import pickle
import signal
import sys
import traceback
from collections import deque
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

from evo.feed import Feed, call, default_fn, failed_result, feed_of  # noqa: F401  (shared with evo.dask_executor)
from models.data import SetupError  # light: models.data imports torch only when it makes tensors

if TYPE_CHECKING:
    from evo.evaluate import EvalTask


def gpu_slots(gpus: int | Sequence[int], workers_per_gpu: int, workers: int | None = None) -> list[str]:
    """Worker devices: `workers` (default: all slots) spread round-robin, at most workers_per_gpu per GPU."""
    ids = list(range(gpus)) if isinstance(gpus, int) else list(gpus)
    if not ids:
        raise ValueError(f"no GPU to place workers on, got gpus={gpus!r}")
    if workers_per_gpu < 1:
        raise ValueError(f"workers_per_gpu must be >= 1, got {workers_per_gpu}")
    n = len(ids) * workers_per_gpu if workers is None else workers
    if not 1 <= n <= len(ids) * workers_per_gpu:
        raise ValueError(f"workers={n} does not fit {len(ids)} GPU(s) x {workers_per_gpu} "
                         f"workers per GPU; raise --workers-per-gpu or lower --workers")
    return [f"cuda:{ids[i % len(ids)]}" for i in range(n)]


class SerialExecutor:
    """Evaluate in this process, one task after another."""

    def __init__(self, fn: Callable | None = None):
        self.fn = fn or default_fn()

    def run(self, tasks: Iterable[EvalTask] | Feed) -> Iterator[dict]:
        feed, todo = feed_of(tasks), deque()
        while True:
            todo.extend(feed.take())
            if not todo:
                return
            yield call(self.fn, todo.popleft())

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process."""


def _die_with_parent(parent: int) -> None:
    """On Linux, have the kernel kill this worker when the driver dies (even by SIGKILL), so that no
    orphan trains on and writes into --out; elsewhere the worker ends at its next message."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the driver died before the line above took effect
        os._exit(0)


def _worker_main(conn, device: str | None, fn: Callable, parent: int | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when workers stop
    if parent is not None:
        _die_with_parent(parent)
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the driver is gone
            return
        if msg is None:
            return
        idx, task = msg
        if device is not None:
            task = dataclasses.replace(task, device=device)
        try:
            out = (idx, call(fn, task), None)
        except Exception as e:  # sent back to the driver, which raises it
            out = (idx, None, (_portable(e), traceback.format_exc()))
        try:
            conn.send(out)
        except OSError:  # the driver is gone (BrokenPipeError): nothing to report to
            return


def _portable(e: Exception) -> Exception:
    """e if it survives a pickle round trip, else an exception of the nearest kind with its text."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        if isinstance(e, SetupError):
            return SetupError(str(e))
        return RuntimeError(f"{type(e).__name__}: {e}")


class _Worker:
    """One worker process, its pipe, and the index of the task it runs (None when idle)."""

    def __init__(self, ctx, device: str | None, fn: Callable, name: str):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, device, fn, os.getpid()), name=name,
                                daemon=True)
        self.proc.start()
        child.close()
        self.job: int | None = None

    def stop(self, timeout: float = 5.0) -> None:
        if self.job is None and self.proc.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            pass
    return f"exit code {exitcode}"


class ProcessExecutor:
    """Evaluate in `workers` spawned processes; devices[i], if given, is worker i's torch device."""

    def __init__(self, workers: int, retries: int = 2, devices: Sequence[str] | None = None,
                 fn: Callable | None = None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if devices is not None and len(devices) != workers:
            raise ValueError(f"devices {list(devices)} must name one device per worker ({workers})")
        self.n, self.retries = workers, retries
        self.devices = list(devices) if devices is not None else [None] * workers
        self.fn = fn or default_fn()
        self._ctx = mp.get_context("spawn")  # fork after torch (or CUDA) init is unsafe
        self._workers: list[_Worker | None] = [None] * workers
        self.started = 0
        """worker processes started so far (restarts included)"""

    def _worker(self, i: int) -> _Worker:
        w = self._workers[i]
        if w is None or not w.proc.is_alive():
            if w is not None:
                w.stop()
            w = self._workers[i] = _Worker(self._ctx, self.devices[i], self.fn, f"dimorph-worker-{i}")
            self.started += 1
        return w

    def run(self, tasks: Iterable[EvalTask] | Feed) -> Iterator[dict]:
        feed, tasks, pending, deaths = feed_of(tasks), [], deque(), []

        def pull():  # the tasks fed since the last turn join the queue
            new = feed.take()
            pending.extend(range(len(tasks), len(tasks) + len(new)))
            tasks.extend(new)
            deaths.extend([0] * len(new))

        def dispatch():  # idle workers take the queue's first tasks
            pull()
            for i in range(self.n):
                if pending and (self._workers[i] is None or self._workers[i].job is None):
                    self._send(i, pending.popleft(), tasks)

        pull()
        for i in range(min(self.n, len(tasks))):  # start them together, so that their imports overlap
            self._worker(i)
        feed.notify = dispatch  # a task fed between two results starts at once
        try:
            while True:
                dispatch()
                if not any(w is not None and w.job is not None for w in self._workers):
                    return
                busy = [w for w in self._workers if w is not None and w.job is not None]
                wait([w.conn for w in busy] + [w.proc.sentinel for w in busy])
                for w in busy:
                    yield from self._collect(w, tasks, pending, deaths)
        finally:  # an abandoned or failed run: stop the workers still busy, so no stale result leaks
            feed.notify = None
            for i, w in enumerate(self._workers):
                if w is not None and w.job is not None:
                    w.proc.kill()
                    w.stop()
                    self._workers[i] = None

    def _send(self, i: int, j: int, tasks: list) -> None:
        for _ in range(2):  # a worker found dead while idle is replaced, and the task not charged
            w = self._worker(i)
            try:
                w.conn.send((j, tasks[j]))
                w.job = j
                return
            except (BrokenPipeError, ConnectionResetError):
                w.proc.kill()
        raise RuntimeError(f"worker {i} dies on start (exit code {self._workers[i].proc.exitcode})")

    def _collect(self, w: _Worker, tasks: list, pending: deque, deaths: list) -> Iterator[dict]:
        got = None
        try:
            if w.conn.poll():
                got = w.conn.recv()
        except (EOFError, OSError):
            got = None
        if got is not None:
            idx, res, err = got
            assert idx == w.job, (idx, w.job)
            w.job = None
            if err is not None:
                exc, tb = err
                raise exc from RemoteTraceback(tb)
            yield res
        elif not w.proc.is_alive():
            w.proc.join()
            j, w.job = w.job, None
            deaths[j] += 1
            if deaths[j] > self.retries:
                yield failed_result(tasks[j], f"worker died {deaths[j]} times: {_death(w.proc.exitcode)}")
            else:
                pending.appendleft(j)  # retried first, by a fresh worker

    def close(self) -> None:
        for i, w in enumerate(self._workers):
            if w is not None:
                w.stop()
            self._workers[i] = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def visible_gpus() -> int:
    """How many CUDA devices this process sees."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def make_executor(cfg, fn: Callable | None = None):
    """The executor the config asks for: Dask, local processes (spread over GPUs), or serial."""
    if getattr(cfg, "table", None) and fn is None:  # a tabular benchmark: evaluation by lookup
        from evo.table import TableEvaluator

        fn = TableEvaluator(cfg.table)
    if getattr(cfg, "objective", None) and fn is None:  # your own model (evo.objective)
        from evo.objective_space import ObjectiveEvaluator

        fn = ObjectiveEvaluator(cfg.objective)
    if cfg.dask_scheduler or cfg.dask_local:
        from evo.dask_executor import DaskExecutor

        return DaskExecutor(address=cfg.dask_scheduler, local_workers=cfg.dask_local,
                            retries=cfg.retries, fn=fn)
    workers = cfg.n_workers
    if workers > 0:
        devices = None
        if cfg.device.startswith("cuda"):
            gpus = [int(cfg.device.split(":")[1])] if ":" in cfg.device else visible_gpus()
            if gpus == 0:
                raise ValueError(f"device {cfg.device!r} asks for a GPU but none is visible")
            devices = gpu_slots(gpus, cfg.workers_per_gpu, workers)
        return ProcessExecutor(workers, retries=cfg.retries, devices=devices, fn=fn)
    return SerialExecutor(fn=fn)
