"""Generation wall time by executor: one batch of early trainings, serial, in processes, on Dask.

Each executor runs the same batch cold, then warm: the cold run pays the workers' start (imports,
dataset load), a warm one is what every later generation costs. "eval s" sums the seconds spent
inside the evaluations of the fastest warm run: above the warm wall time means they overlapped.
Results must be equal across executors; the script checks it. A batch of no-op tasks measures the
per-task overhead.

    python benchmarks/executors.py --tasks 6 --workers 2 [--data PATH] [--out benchmarks/results/executors.json]
"""
import argparse
import json
import os
import pathlib
import platform
import random
import time

from evo.dask_executor import DaskExecutor
from evo.evaluate import EvalTask
from evo.executors import ProcessExecutor, SerialExecutor
from models.presets import get_preset

CLOCK = ("wall_time", "eval_seconds", "tokens_per_s")


def noop(task) -> dict:
    """An evaluation that does nothing: what is left of its wall time is the executor's overhead."""
    return {"key": task.key, "error": None, "diverged": False, "phase": task.phase}


def batch(n: int, data: str | None, seed: int) -> list[EvalTask]:
    """n early trainings of random tiny-preset architectures, one thread each."""
    p, rng = get_preset("tiny"), random.Random(seed)
    return [EvalTask(key=f"b{i}", genes=p.sample(rng), preset=p, steps=p.early_steps, seed=seed + i,
                     data=data, threads=1) for i in range(n)]


def timed(make, tasks, repeats: int) -> tuple[dict, dict]:
    """Start an executor, run the batch cold then `repeats` times warm; seconds, and the results."""
    t0 = time.perf_counter()
    with make() as ex:
        t1 = time.perf_counter()
        list(ex.run(tasks))
        t2 = time.perf_counter()
        warm, busy = [], []
        for _ in range(repeats):  # the machine is shared: the fastest run is the least disturbed
            t = time.perf_counter()
            raw = list(ex.run(tasks))
            warm.append(time.perf_counter() - t)
            busy.append(sum(r["eval_seconds"] for r in raw))
        res = {r["key"]: {k: v for k, v in r.items() if k not in CLOCK} for r in raw}
    i = warm.index(min(warm))
    return {"start_s": t1 - t0, "cold_s": t2 - t1, "warm_s": warm[i], "warm_runs_s": warm,
            "eval_s": busy[i]}, res


def overhead_ms(make, n: int) -> float:
    """Milliseconds per no-op task, warm."""
    p = get_preset("tiny")
    tasks = [EvalTask(key=f"n{i}", genes={}, preset=p, steps=1, seed=i) for i in range(n)]
    with make() as ex:
        list(ex.run(tasks[:4]))
        t0 = time.perf_counter()
        list(ex.run(tasks))
        return (time.perf_counter() - t0) / n * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--noops", type=int, default=200)
    ap.add_argument("--out", default="benchmarks/results/executors.json")
    a = ap.parse_args(argv)
    if min(a.tasks, a.workers, a.repeats) < 1:
        raise ValueError(f"tasks, workers and repeats must be >= 1, got {a.tasks}, {a.workers}, {a.repeats}")
    tasks = batch(a.tasks, a.data, a.seed)
    makers = {"serial": SerialExecutor,
              f"process({a.workers})": lambda: ProcessExecutor(a.workers),
              f"dask-local({a.workers})": lambda: DaskExecutor(local_workers=a.workers)}
    rows, ref = {}, None
    for name, make in makers.items():
        rows[name], res = timed(make, tasks, a.repeats)
        assert ref is None or res == ref, f"{name} results differ from serial"
        ref = res
    noop_makers = {f"process({a.workers})": lambda: ProcessExecutor(a.workers, fn=noop),
                   f"dask-local({a.workers})": lambda: DaskExecutor(local_workers=a.workers, fn=noop)}
    for name, make in noop_makers.items():
        rows[name]["overhead_ms_per_task"] = overhead_ms(make, a.noops)
    base = rows["serial"]["warm_s"]
    print(f"{a.tasks} early trainings ({get_preset('tiny').early_steps} steps, tiny preset), "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'executor':<16}{'start s':>9}{'cold s':>9}{'warm s (min)':>13}{'eval s':>8}{'speed-up':>10}"
          f"{'ms/task':>9}")
    for name, r in rows.items():
        ms = r.get("overhead_ms_per_task")
        print(f"{name:<16}{r['start_s']:>9.2f}{r['cold_s']:>9.2f}{r['warm_s']:>13.2f}{r['eval_s']:>8.2f}"
              f"{base / r['warm_s']:>10.2f}{'' if ms is None else f'{ms:.2f}':>9}")
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(a), "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
                               "python": platform.python_version(), "results_equal": True,
                               "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
