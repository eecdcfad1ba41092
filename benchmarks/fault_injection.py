"""Fault injection: a search (or a table build) is killed, has its journal torn at a random byte, or
meets a full disk / a read-only folder on a random journal write; it is resumed, and must end
exactly as an uninterrupted run with nothing logged twice and nothing finished lost.

Searches run against a small synthetic table (lookups), so one trial takes seconds:

    python benchmarks/fault_injection.py --trials 30 --workers 2 --builds 6

Per search trial: a random seed, mode and scheduling (generational, or --steady 2), and one fault:
- kill: SIGKILL once its journal has a random number of lines (maybe again after a resume), with a
  worker process killed at a random moment in between;
- torn: SIGKILL, then the journal cut at a random byte (a write torn mid-line);
- ENOSPC / EACCES: the N-th journal write (N random) writes part of its line and fails
  (benchmarks/fault_shim.py); the search must stop with exit code 2 and one line naming the file.
Then it is resumed to the end. The checks: the summary's best architecture, compute and archive
equal the uninterrupted run's, no MLflow metric has two points at the same step in any run, and no
journaled training is a failure. Build trials do the same to `evo.bench build` (4 tiny trainings)
and compare the tables written.
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


SHIM = str(ROOT / "benchmarks" / "fault_shim.py")
FAULTS = ("kill", "torn", "ENOSPC", "EACCES")


def _cmd(table, out, db, seed, mode, workers, gens, steady=0):
    return [sys.executable, "-m", "evo.run", "--table", str(table), "--out", str(out), "--seed", str(seed),
            "--mode", mode, "--gens", str(gens), "--workers", str(workers), "--no-progress", "--steady", str(steady),
            "--tracking-uri", f"sqlite:///{db}", "--experiment", f"fault-{seed}-{mode}"]


def _disk_fault(cmd, n: int, kind: str, cut: float) -> str:
    """Run cmd with its n-th journal write failing (kind); it must stop with exit 2 and one line."""
    env = {**os.environ, "DIMORPH_FAULT_WRITE": str(n), "DIMORPH_FAULT_KIND": kind, "DIMORPH_FAULT_CUT": str(cut)}
    proc = subprocess.run([sys.executable, SHIM, *cmd[2:]], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    err = [line for line in proc.stderr.splitlines() if " INFO " not in line and line.strip()]
    one_line = proc.returncode == 2 and len(err) == 1 and "cannot write" in err[0] and ".jsonl" in err[0]
    return f"{kind}@{n}" + ("" if one_line else f" (exit {proc.returncode}, {len(err)} lines: {err[-1:]})")


def _tear(path: Path, rng) -> int:
    """Cut the file at a random byte of its last quarter, inside a line; returns the offset."""
    data = path.read_bytes()
    at = rng.randrange(max(1, len(data) * 3 // 4), len(data))
    while at > 1 and data[at - 1:at] == b"\n":
        at -= 1
    path.write_bytes(data[:at])
    return at


def _failed_results(journal: Path) -> int:
    n = 0
    for line in journal.read_text().splitlines():
        e = json.loads(line)
        if e["id"].startswith("eval/") and (e["value"].get("error") or e["value"].get("diverged")):
            n += 1
    return n


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
    steady, fault = rng.choice([0, 2]), FAULTS[k % len(FAULTS)]
    ref_out, db = work / f"ref{k}", work / f"mlflow{k}.db"
    _run_until(_cmd(table, ref_out, work / f"ref{k}.db", seed, mode, 0, gens, steady), ref_out / "journal.jsonl",
               None, False, rng)
    ref = _result(ref_out)
    total = _lines(ref_out / "journal.jsonl")
    out = work / f"run{k}"
    cmd = _cmd(table, out, db, seed, mode, workers, gens, steady)
    events = []
    if fault == "kill":
        kills = sorted(rng.sample(range(1, total), min(rng.choice([1, 2]), total - 1)))
        for i, at in enumerate(kills):
            events.append(_run_until(cmd + (["--resume"] if i else []), out / "journal.jsonl", at,
                                     workers > 0, rng))
    elif fault == "torn":
        events.append(_run_until(cmd, out / "journal.jsonl", rng.randrange(2, total), workers > 0, rng))
        events.append(f"torn@{_tear(out / 'journal.jsonl', rng)}")
    else:
        events.append(_disk_fault(cmd, rng.randrange(2, total), fault, rng.random()))
    resume = cmd + ["--resume"] if (out / "checkpoint.json").exists() or (out / "journal.jsonl").exists() else cmd
    events.append(_run_until(resume, out / "journal.jsonl", None, workers > 0, rng))
    got = _result(out)
    dup = _duplicates(db, f"fault-{seed}-{mode}")
    return {"trial": k, "kind": "search", "seed": seed, "mode": mode, "steady": steady, "fault": fault,
            "journal_lines": total, "events": events, "identical": got == ref and "(" not in " ".join(events),
            "duplicate_points": dup, "failed_results": _failed_results(out / "journal.jsonl")}


def _build_cmd(out, data, seed):
    return [sys.executable, "-m", "evo.bench", "build", "--n", "4", "--full-steps", "12", "--noise", "0",
            "--workers", "0", "--seed", str(seed), "--data", str(data), "--out", str(out)]


def _table_files(out: Path) -> dict:
    """The table's files without the measured columns (seconds per step, tokens per second)."""
    import csv

    rows = list(csv.DictReader(open(out / "archs.csv")))
    archs = [{k: v for k, v in r.items() if k not in ("seconds_per_step", "tokens_per_s")} for r in rows]
    return {"archs": archs, **{f: (out / f).read_text() for f in ("curves.csv", "seeds.csv")}}


def build_trial(k: int, rng: random.Random, work: Path, data: Path) -> dict:
    """`evo.bench build` under one fault, resumed: the same table as an uninterrupted build."""
    seed, fault = rng.randrange(1000), FAULTS[k % len(FAULTS)]
    ref = work / f"bref{k}"
    subprocess.run(_build_cmd(ref, data, seed), cwd=ROOT, check=True, capture_output=True, timeout=600)
    out = work / f"build{k}"
    cmd = _build_cmd(out, data, seed)
    journal = out / "build.jsonl"
    if fault in ("kill", "torn"):
        events = [_run_until(cmd, journal, rng.randrange(1, 4), False, rng)]
        if fault == "torn" and journal.exists() and journal.stat().st_size:
            events.append(f"torn@{_tear(journal, rng)}")
    else:
        events = [_disk_fault(cmd, rng.randrange(1, 5), fault, rng.random())]
    events.append(_run_until(cmd, journal, None, False, rng))
    failed = sum(bool(json.loads(line).get("error")) for line in journal.read_text().splitlines())
    return {"trial": k, "kind": "build", "seed": seed, "fault": fault, "events": events,
            "identical": _table_files(out) == _table_files(ref) and "(" not in " ".join(events),
            "duplicate_points": 0, "failed_results": failed}


def main(argv=None):
    from table_helpers import make_table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--builds", type=int, default=4, help="trials of evo.bench build (live tiny trainings)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the faulted searches")
    ap.add_argument("--gens", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None, help="the text the builds train on (default: $DIMORPH_DATA)")
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
            print(f"search {k}: {r['mode']}{' --steady 2' if r['steady'] else ''} seed {r['seed']}, {r['fault']} "
                  f"({', '.join(r['events'])}): identical={r['identical']}, duplicate MLflow points="
                  f"{r['duplicate_points']}, failed results={r['failed_results']} ({r['seconds']:.0f} s)", flush=True)
        data = a.data or os.environ.get("DIMORPH_DATA")
        for k in range(a.builds if data else 0):
            t0 = time.time()
            r = build_trial(k, rng, work, Path(data))
            r["seconds"] = time.time() - t0
            rows.append(r)
            print(f"build {k}: seed {r['seed']}, {r['fault']} ({', '.join(r['events'])}): identical table="
                  f"{r['identical']}, failed results={r['failed_results']} ({r['seconds']:.0f} s)", flush=True)
    ok = sum(r["identical"] and r["duplicate_points"] == 0 and r["failed_results"] == 0 for r in rows)
    print(f"{ok}/{len(rows)} trials identical to the uninterrupted run, with no duplicate MLflow points and no "
          f"training lost or booked as failed")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"trials": rows, "ok": ok, "n": len(rows), "workers": a.workers}, indent=1))
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
