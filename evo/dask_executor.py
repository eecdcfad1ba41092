"""Evaluate on a Dask cluster: a running scheduler (several machines) or a LocalCluster.

Every worker must be able to import this project (pip install it there) and to read the data: the
same path, $DIMORPH_DATA, or a filled cache. Training states (promotions) are files, so workers
need a shared --out folder when a search promotes early trainings to full ones.
"""
from __future__ import annotations

import logging
import uuid
from collections import deque
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from evo.feed import Feed, call, default_fn, failed_result, feed_of

if TYPE_CHECKING:
    from evo.evaluate import EvalTask


def _import_distributed():
    try:
        import dask
        import distributed
    except ImportError as e:
        raise ImportError("Dask executors need the 'distributed' extra: pip install 'dimorph[distributed]' "
                          "(or pip install 'dask[distributed]')") from e
    return dask, distributed


class DaskExecutor:
    """Evaluate on the scheduler at `address`, or on a LocalCluster of `local_workers` processes.

    At most one task per worker thread is out at a time, so a worker that dies held only the task it
    was running, and only that task is charged.
    """

    def __init__(self, address: str | None = None, local_workers: int = 0, retries: int = 2,
                 fn: Callable | None = None, poll_s: float = 1.0):
        if bool(address) == bool(local_workers):
            raise ValueError(f"give either address or local_workers, got address={address!r}, "
                             f"local_workers={local_workers}")
        if local_workers < 0:
            raise ValueError(f"local_workers must be >= 0, got {local_workers}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        dask, distributed = _import_distributed()
        self.retries, self.fn, self.poll_s = retries, fn or default_fn(), poll_s
        self.cluster = None
        if address:  # its scheduler's allowed-failures may retry a lost task before we see it
            self.client = distributed.Client(address)
        else:  # the scheduler lives in this process: every worker death comes to us at once
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                self.cluster = distributed.LocalCluster(
                    n_workers=local_workers, threads_per_worker=1, processes=True,
                    dashboard_address=None, silence_logs=logging.ERROR)
            self.client = distributed.Client(self.cluster)

    def _submit(self, task, attempt: int):
        key = f"dimorph-{task.key}-{attempt}-{uuid.uuid4().hex[:8]}"
        return self.client.submit(call, self.fn, task, key=key, pure=False)

    def run(self, tasks: Iterable[EvalTask] | Feed) -> Iterator[dict]:
        from distributed import wait
        from distributed.comm.core import CommClosedError
        from distributed.scheduler import KilledWorker

        feed, tasks, queue, deaths, lost = feed_of(tasks), [], deque(), [], []
        out = {}  # future key -> (task index, future)

        def dispatch():  # tasks fed since the last turn join the queue; free threads take its first
            new = feed.take()
            queue.extend(range(len(tasks), len(tasks) + len(new)))
            tasks.extend(new)
            deaths.extend([0] * len(new))
            lost.extend([0] * len(new))
            room = max(1, sum(self.client.nthreads().values())) - len(out)
            for _ in range(min(room, len(queue))):
                j = queue.popleft()
                f = self._submit(tasks[j], deaths[j] + lost[j])
                out[f.key] = (j, f)

        feed.notify = dispatch  # a task fed between two results starts at once
        try:
            while True:
                dispatch()
                if not queue and not out:
                    return
                try:
                    with self.client.as_current():
                        wait([f for _, f in out.values()], timeout=self.poll_s, return_when="FIRST_COMPLETED")
                except TimeoutError:  # look again for room: a restarted worker may have joined
                    pass
                for key, (j, f) in list(out.items()):
                    if not f.done():
                        continue
                    del out[key]
                    exc = f.exception() if f.status == "error" else None
                    if f.status == "finished":
                        res = f.result()
                        f.release()  # drop the worker's copy now: a result lost later is not recomputed
                        yield res
                    elif isinstance(exc, KilledWorker):
                        deaths[j] += exc.allowed_failures + 1
                        if deaths[j] > self.retries:
                            last = getattr(exc.last_worker, "address", "?")
                            yield failed_result(tasks[j], f"worker died {deaths[j]} times (last: {last})")
                        else:
                            queue.appendleft(j)
                    elif f.status in ("cancelled", "lost") or isinstance(exc, CommClosedError):
                        lost[j] += 1  # lost with a connection or a restarted scheduler
                        if lost[j] > self.retries:
                            yield failed_result(tasks[j], f"evaluation lost {lost[j]} times ({f.status})")
                        else:
                            queue.appendleft(j)
                    else:  # a bug in the evaluation or a SetupError: raise it here, as the
                        f.result()  # serial executor does; the finally clause cancels the rest
        finally:
            feed.notify = None
            if out:  # an abandoned or failed run: nothing of it keeps running
                self.client.cancel([f for _, f in out.values()])

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
