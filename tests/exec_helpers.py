"""Light stand-ins for the evaluation, importable by worker processes (no torch import)."""
import math
import os
import signal
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FakeTask:
    """The fields of EvalTask that executors touch."""

    key: str
    seed: int
    phase: str = "early"
    device: str = "cpu"
    meta: dict = field(default_factory=dict)


def value(seed: int) -> float:
    """A deterministic function of the seed, with enough digits to catch a mix-up."""
    return sum(math.sin(seed * k + 0.5) / k for k in range(1, 2000))


def _first_time(marker: str) -> bool:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def fake_eval(task) -> dict:
    """Sleep, kill this process, raise or return a value, as task.meta asks."""
    m = task.meta
    if "log" in m:  # one line per start, to count attempts
        with open(m["log"], "a") as f:
            f.write(task.key + "\n")
    time.sleep(m.get("sleep", 0.0))
    if m.get("kill") == "always" or (m.get("kill") == "once" and _first_time(m["marker"])):
        os.kill(os.getpid(), signal.SIGKILL)
    if m.get("raise"):
        raise TypeError(f"a bug in the evaluation of {task.key}")
    if m.get("oom"):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return {"key": task.key, "error": None, "diverged": False, "phase": task.phase,
            "value": value(task.seed), "device": task.device, "pid": os.getpid()}


def spin(task) -> dict:
    """CPU-bound stand-in for a training: meta['n'] multiply-adds in pure Python."""
    x = float(task.seed)
    for _ in range(task.meta.get("n", 10**6)):
        x = (x * 1.0000001 + 1e-7) % 1000.0
    return {"key": task.key, "error": None, "diverged": False, "phase": task.phase, "value": x}
