"""Fault injection: kill -9 a search at random journal lines (and its workers at random moments),
resume it, and check that it ends exactly as an uninterrupted search with nothing logged twice.

Searches run against a small synthetic table (lookups), so one trial takes seconds:

    python benchmarks/fault_injection.py --trials 20 --workers 2

Per trial: a random seed and mode; the search is started as `python -m evo.run --table ...`,
SIGKILLed once its journal has a random number of lines, possibly SIGKILLed again after a resume,
with a worker process killed at a random moment in between, then resumed to the end. The checks:
the summary's best architecture, compute and archive equal the uninterrupted run's, and no MLflow
metric has two points at the same step in any child or parent run.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _cmd(table, out, db, seed, mode, workers, gens):
    return [sys.executable, "-m", "evo.run", "--table", str(table), "--out", str(out), "--seed", str(seed),
            "--mode", mode, "--gens", str(gens), "--workers", str(workers), "--no-progress",
            "--tracking-uri", f"sqlite:///{db}", "--experiment", f"fault-{seed}-{mode}"]


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def _children(pid: int) -> list[int]:
    try:
        # worker processes only (multiprocessing's spawn_main), not its resource tracker
        out = subprocess.run(["pgrep", "-P", str(pid), "-f", "spawn_main"], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    return [int(x) for x in out.split()]


def _run_until(cmd, journal: Path, kill_at: int | None, kill_worker: bool, rng, timeout=300) -> str:
    """Run cmd; SIGKILL it when the journal reaches kill_at lines (and maybe one of its worker
    processes before). Returns 'killed' or 'finished', with '+worker' when a worker was killed."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0, worker_killed = time.time(), False
    while proc.poll() is None:
        n = _lines(journal)
        if kill_worker and not worker_killed and n >= 2 and rng.random() < 0.3:
            kids = _children(proc.pid)
            if kids:
                os.kill(rng.choice(kids), signal.SIGKILL)
                worker_killed = True
        if kill_at is not None and n >= kill_at:
            proc.kill()
            proc.wait()
            return "killed" + ("+worker" if worker_killed else "")
        if time.time() - t0 > timeout:
            proc.kill()
            raise RuntimeError(f"timed out: {' '.join(cmd)}")
        time.sleep(0.02)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(cmd)}\n{proc.stderr.read()[-2000:]}")
    return "finished" + ("+worker" if worker_killed else "")


def _duplicates(db: Path, experiment: str) -> int:
    """Metric points logged twice (same run, key and step) in an experiment."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = c.get_experiment_by_name(experiment)
    dup = 0
    for run in c.search_runs([exp.experiment_id], max_results=5000):
        for key in run.data.metrics:
            steps = [m.step for m in c.get_metric_history(run.info.run_id, key)]
            dup += len(steps) - len(set(steps))
    return dup


def _result(out: Path) -> dict:
    s = json.loads((out / "summary.json").read_text())
    snap = json.loads((out / "checkpoint.json").read_text())
    return {"best": (s["best"] or {}).get("key"), "best_val": (s["best"] or {}).get("best_val_loss"),
            "compute": {k: v for k, v in s["compute"].items() if k != "seconds"},
            "archive": [(r["key"], r["target"]) for r in snap["archive"]]}


def trial(k: int, rng: random.Random, table: Path, work: Path, workers: int, gens: int) -> dict:
    seed, mode = rng.randrange(1000), rng.choice(["combined", "female", "male"])
    ref_out, db = work / f"ref{k}", work / f"mlflow{k}.db"
    _run_until(_cmd(table, ref_out, work / f"ref{k}.db", seed, mode, 0, gens), ref_out / "journal.jsonl",
               None, False, rng)
    ref = _result(ref_out)
    total = _lines(ref_out / "journal.jsonl")
    out = work / f"run{k}"
    kills = sorted(rng.sample(range(1, total), min(rng.choice([1, 2]), total - 1)))
    cmd = _cmd(table, out, db, seed, mode, workers, gens)
    events = []
    for i, at in enumerate(kills):
        events.append(_run_until(cmd + (["--resume"] if i else []), out / "journal.jsonl", at,
                                 workers > 0, rng))
    events.append(_run_until(cmd + ["--resume"], out / "journal.jsonl", None, workers > 0, rng))
    got = _result(out)
    dup = _duplicates(db, f"fault-{seed}-{mode}")
    return {"trial": k, "seed": seed, "mode": mode, "journal_lines": total, "kills_at": kills,
            "events": events, "identical": got == ref, "duplicate_points": dup}


def main(argv=None):
    from table_helpers import make_table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the killed searches")
    ap.add_argument("--gens", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/fault_injection.json")
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        table = make_table(work / "table", n=60)
        for k in range(a.trials):
            t0 = time.time()
            r = trial(k, rng, table, work, a.workers, a.gens)
            r["seconds"] = time.time() - t0
            rows.append(r)
            print(f"trial {k}: {r['mode']} seed {r['seed']}, killed at journal lines {r['kills_at']} of "
                  f"{r['journal_lines']} ({', '.join(r['events'])}): identical={r['identical']}, duplicate MLflow points="
                  f"{r['duplicate_points']} ({r['seconds']:.0f} s)", flush=True)
    ok = sum(r["identical"] and r["duplicate_points"] == 0 for r in rows)
    print(f"{ok}/{len(rows)} trials identical to the uninterrupted run with no duplicate MLflow points")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"trials": rows, "ok": ok, "n": len(rows), "workers": a.workers}, indent=1))
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
