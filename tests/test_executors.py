"""Executors: same results whatever runs them; a dead worker costs a retry, never the batch."""
import dataclasses
from pathlib import Path
from collections import Counter

import pytest

from evo.config import Config
from evo.executors import ProcessExecutor, SerialExecutor, gpu_slots, make_executor
from exec_helpers import FakeTask, fake_eval, value


def tasks(n=6, log=None, **meta_by_index):
    """n fake tasks; meta_by_index maps 't<i>' to that task's meta; each start is noted in `log`."""
    extra = {"log": str(log)} if log else {}
    return [FakeTask(key=f"t{i}", seed=100 + i, meta={**meta_by_index.get(f"t{i}", {}), **extra})
            for i in range(n)]


def starts(log):
    """How many times each task started."""
    return Counter(log.read_text().split())


def by_key(results):
    """Results without the worker pid, keyed, after checking each key came exactly once."""
    results = list(results)
    counts = Counter(r["key"] for r in results)
    assert all(c == 1 for c in counts.values()), counts
    return {r["key"]: {k: v for k, v in r.items() if k != "pid"} for r in results}


@pytest.fixture(scope="module")
def pool():
    with ProcessExecutor(2, retries=2, fn=fake_eval) as ex:
        yield ex


@pytest.fixture(scope="module")
def dask_ex():
    pytest.importorskip("distributed")
    from evo.dask_executor import DaskExecutor

    with DaskExecutor(local_workers=2, retries=1, fn=fake_eval) as ex:
        yield ex


def test_gpu_slots_spread_round_robin():
    assert gpu_slots(2, 4) == ["cuda:0", "cuda:1"] * 4
    assert gpu_slots(2, 4, workers=3) == ["cuda:0", "cuda:1", "cuda:0"]
    assert gpu_slots([1], 8, workers=8) == ["cuda:1"] * 8
    assert Counter(gpu_slots(3, 2)) == {"cuda:0": 2, "cuda:1": 2, "cuda:2": 2}
    with pytest.raises(ValueError, match="workers=9"):
        gpu_slots(2, 4, workers=9)
    with pytest.raises(ValueError, match="gpus=0"):
        gpu_slots(0, 4)
    with pytest.raises(ValueError, match="workers_per_gpu must be >= 1, got 0"):
        gpu_slots(1, 0)


def test_make_executor_picks_from_config(monkeypatch):
    assert isinstance(make_executor(Config(workers=0), fn=fake_eval), SerialExecutor)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    auto = make_executor(Config(), fn=fake_eval)  # default: one worker per core on CPU
    assert isinstance(auto, ProcessExecutor) and auto.n == 2
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert isinstance(make_executor(Config(), fn=fake_eval), SerialExecutor)
    ex = make_executor(Config(workers=3, retries=5), fn=fake_eval)
    assert isinstance(ex, ProcessExecutor) and (ex.n, ex.retries, ex.devices) == (3, 5, [None] * 3)
    ex = make_executor(Config(workers=3, device="cuda:1", workers_per_gpu=4), fn=fake_eval)
    assert ex.devices == ["cuda:1"] * 3
    monkeypatch.setattr("evo.executors.visible_gpus", lambda: 2)
    ex = make_executor(Config(workers=4, device="cuda", workers_per_gpu=2), fn=fake_eval)
    assert ex.devices == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    with pytest.raises(ValueError, match="workers=5"):
        make_executor(Config(workers=5, device="cuda", workers_per_gpu=2), fn=fake_eval)
    assert ex.started == 0  # nothing starts before the first batch


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        ProcessExecutor(0)
    with pytest.raises(ValueError, match="retries must be >= 0, got -1"):
        ProcessExecutor(2, retries=-1)
    with pytest.raises(ValueError, match="one device per worker"):
        ProcessExecutor(2, devices=["cuda:0"])


def test_serial_equals_process(pool):
    ts = tasks(6)
    serial = by_key(SerialExecutor(fn=fake_eval).run(ts))
    assert serial == by_key(pool.run(ts))
    assert serial == by_key(pool.run(ts))  # workers are reused across batches
    assert [serial[t.key]["value"] for t in ts] == [value(t.seed) for t in ts]
    assert len({r["pid"] for r in pool.run(tasks(4, t0={"sleep": 0.3}, t1={"sleep": 0.3}))}) == 2


def test_process_worker_devices():
    with ProcessExecutor(2, devices=["cuda:0", "cuda:1"], fn=fake_eval) as ex:
        res = list(ex.run(tasks(4, t0={"sleep": 0.3}, t1={"sleep": 0.3})))
    by_pid = {}
    for r in res:
        by_pid.setdefault(r["pid"], set()).add(r["device"])
    assert sorted(map(tuple, by_pid.values())) == [("cuda:0",), ("cuda:1",)]


def test_process_worker_killed_once_is_retried(pool, tmp_path):
    started = pool.started
    ts = tasks(5, tmp_path / "log", t1={"kill": "once", "marker": str(tmp_path / "m"), "sleep": 0.2},
               t0={"sleep": 0.4})
    res = by_key(pool.run(ts))
    assert starts(tmp_path / "log") == {"t0": 1, "t1": 2, "t2": 1, "t3": 1, "t4": 1}
    assert res == by_key(SerialExecutor(fn=fake_eval).run(tasks(5)))  # t0, beside it, was not charged
    assert pool.started == started + 1


def test_process_task_killing_every_worker_fails_alone(pool, tmp_path):
    started = pool.started
    res = by_key(pool.run(tasks(5, tmp_path / "log", t2={"kill": "always"}, t0={"sleep": 0.3})))
    assert starts(tmp_path / "log") == {"t0": 1, "t1": 1, "t2": 3, "t3": 1, "t4": 1}
    assert res.pop("t2") == {"key": "t2", "phase": "early", "diverged": False,
                             "error": "worker died 3 times: killed by SIGKILL"}
    assert all(r["error"] is None and r["value"] == value(100 + int(k[1:])) for k, r in res.items())
    assert len(by_key(pool.run(tasks(2)))) == 2  # the last dead worker is replaced by the next batch
    assert pool.started == started + 3


def test_process_bug_raises_and_oom_is_a_failed_result(pool):
    with pytest.raises(TypeError, match="a bug in the evaluation of t1"):
        list(pool.run(tasks(3, t1={"raise": True})))
    res = by_key(pool.run(tasks(3, t1={"oom": True})))
    assert res["t1"]["error"].startswith("RuntimeError: CUDA out of memory")
    assert res["t1"]["diverged"] is False and res["t0"]["error"] is None
    res = by_key(SerialExecutor(fn=fake_eval).run(tasks(2, t0={"oom": True})))
    assert res["t0"]["error"].startswith("RuntimeError: CUDA out of memory")


def test_process_abandoned_run_leaks_nothing(pool):
    it = pool.run(tasks(4, t0={"sleep": 0.5}, t1={"sleep": 0.5}))
    first = next(it)
    it.close()  # the consumer stops: the busy worker is stopped
    assert first["key"] in {"t0", "t1"}
    res = by_key(pool.run(tasks(3)))
    assert sorted(res) == ["t0", "t1", "t2"] and res == by_key(SerialExecutor(fn=fake_eval).run(tasks(3)))


@pytest.mark.slow
def test_dask_equals_serial(dask_ex):
    ts = tasks(6)
    assert by_key(dask_ex.run(ts)) == by_key(SerialExecutor(fn=fake_eval).run(ts))


@pytest.mark.slow
def test_dask_worker_killed_once_is_retried(dask_ex, tmp_path):
    ts = tasks(4, t1={"kill": "once", "marker": str(tmp_path / "m"), "sleep": 0.2})
    assert by_key(dask_ex.run(ts)) == by_key(SerialExecutor(fn=fake_eval).run(tasks(4)))


@pytest.mark.slow
def test_dask_task_killing_every_worker_fails_alone(dask_ex, tmp_path):
    res = by_key(dask_ex.run(tasks(4, tmp_path / "log", t3={"kill": "always"}, t0={"sleep": 0.3})))
    n = starts(tmp_path / "log")
    assert n["t3"] == 2  # tried once, retried once, then recorded as failed
    # Dask may recompute a finished task whose result sat on the worker that died, but it never
    # charges that death to it: each of the others still yields once, with its own value
    assert all(n[k] in (1, 2) for k in ("t0", "t1", "t2"))
    bad = res.pop("t3")
    assert bad["error"].startswith("worker died 2 times") and bad["diverged"] is False
    assert all(r["error"] is None and r["value"] == value(100 + int(k[1:])) for k, r in res.items())


def test_dask_needs_one_of_address_or_workers():
    pytest.importorskip("distributed")
    from evo.dask_executor import DaskExecutor

    with pytest.raises(ValueError, match="address=None, local_workers=0"):
        DaskExecutor()


@pytest.mark.slow
def test_real_evaluation_is_the_same_everywhere(dask_ex, shakespeare_path, tmp_path):
    import random

    from evo.evaluate import EvalTask, evaluate
    from models.presets import get_preset

    data = tmp_path / "small.txt"  # a short corpus: each worker loads it once
    data.write_text(shakespeare_path.read_text()[:40_000])
    p = dataclasses.replace(get_preset("tiny"), full_steps=20, train_tokens=5000)
    genes = [p.baseline] + [p.sample(random.Random(s)) for s in range(2)]
    ts = [EvalTask(key=f"e{i}", genes=g, preset=p, steps=4, seed=7 + i, data=str(data))
          for i, g in enumerate(genes)]
    clock = {"wall_time", "eval_seconds", "tokens_per_s"}

    def strip(results):
        return {k: {f: v for f, v in r.items() if f not in clock} for k, r in by_key(results).items()}

    serial = strip(SerialExecutor().run(ts))
    assert all(r["error"] is None and len(r["train_losses"]) == 4 for r in serial.values())
    with ProcessExecutor(2) as ex:
        assert strip(ex.run(ts)) == serial
    dask_ex.fn = evaluate
    try:
        assert strip(dask_ex.run(ts)) == serial
    finally:
        dask_ex.fn = fake_eval


def test_dask_takes_tasks_fed_while_it_runs(dask_ex):
    from evo.executors import Feed

    feed = Feed(tasks(1))
    stream = dask_ex.run(feed)
    first = next(stream)
    feed.add(tasks(3)[2])
    rest = list(stream)
    assert [first["key"]] + [r["key"] for r in rest] == ["t0", "t2"]
    assert rest[0]["value"] == by_key(SerialExecutor(fn=fake_eval).run(tasks(3)))["t2"]["value"]


def test_workers_end_when_the_driver_is_killed(tmp_path):
    """kill -9 of the driver: its workers do not train on (and write into --out) as orphans."""
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "driver.py"
    script.write_text(
        "import sys\n"
        f"sys.path[:0] = [{str(root)!r}, {str(root / 'tests')!r}]\n"
        "from evo.executors import ProcessExecutor\n"
        "from tests.exec_helpers import FakeTask, fake_eval\n"
        "if __name__ == '__main__':\n"
        "    with ProcessExecutor(2, fn=fake_eval) as ex:\n"
        "        for r in ex.run([FakeTask(f't{i}', i, meta={'sleep': 120}) for i in range(2)]):\n"
        "            pass\n")
    driver = subprocess.Popen([sys.executable, str(script)])

    def children():
        out = subprocess.run(["pgrep", "-P", str(driver.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def alive(pid):
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        return "\nState:\tZ" not in state

    deadline = time.time() + 60
    while len(children()) < 2 and time.time() < deadline:
        time.sleep(0.2)
    workers = children()
    assert len(workers) >= 2
    time.sleep(1.0)  # the workers are inside their 120 s tasks
    assert all(alive(p) for p in workers)
    driver.kill()
    driver.wait()
    deadline = time.time() + 10
    while any(alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert [p for p in workers if alive(p)] == []
