"""Wall time of `python -m evo.fit` on about 1,000 learning curves (goal: <= 2 minutes on 2 cores).

The curves: the tiny table's 500 architectures as they are, plus `--copies` resampled copies of
each (every logged loss times exp(0.02 * N(0, 1)), the final likewise; ids `<id>~k`), written in the
evo.predict CSV format (train and val rows up to the early budget; finals = the table's target).
Then evo.fit runs in a subprocess with the default --pop/--gens and `--max-seconds`; the script
prints the total wall time, evo.fit's own time, the generations it ran and the held-out scores,
and writes benchmarks/results/fit_speed.json.

    python benchmarks/fit_speed.py [--copies 1] [--early-frac 0.1] [--max-seconds 100]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def write_curves(table, copies: int, early_steps: int, folder: Path, seed: int) -> int:
    """curves.csv and finals.csv of the table plus resampled copies; returns the number of curves."""
    rng = np.random.default_rng(seed)
    n = 0
    with open(folder / "curves.csv", "w") as cf, open(folder / "finals.csv", "w") as ff:
        cf.write("curve_id,step,split,loss\n")
        ff.write("curve_id,final_loss\n")
        for k in range(copies + 1):
            for i, cid in enumerate(table.ids):
                if not np.isfinite(table.targets[i]):
                    continue
                name = cid if k == 0 else f"{cid}~{k}"
                noise = (lambda m: np.exp(0.02 * rng.normal(size=m))) if k else (lambda m: np.ones(m))
                for split in ("train", "val"):
                    s, v = table.curves[i][split]
                    keep = (s <= early_steps) & np.isfinite(v)
                    for st, lo in zip(s[keep], v[keep] * noise(int(keep.sum()))):
                        cf.write(f"{name},{int(st)},{split},{float(lo)!r}\n")
                ff.write(f"{name},{float(table.targets[i] * noise(1)[0])!r}\n")
                n += 1
    return n


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(ROOT / "benchmarks" / "tables" / "tiny"))
    ap.add_argument("--copies", type=int, default=1, help="resampled copies of every curve")
    ap.add_argument("--early-frac", type=float, default=0.1)
    ap.add_argument("--max-seconds", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fit_speed.json"))
    a = ap.parse_args(argv)
    from evo.table import Table

    table = Table(a.table)
    E, F = round(a.early_frac * table.full_steps), table.full_steps
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        n = write_curves(table, a.copies, E, d, a.seed)
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "evo.fit", "--curves", str(d / "curves.csv"), "--finals",
               str(d / "finals.csv"), "--early-steps", str(E), "--full-steps", str(F), "--seed", str(a.seed),
               "--max-seconds", str(a.max_seconds), "--no-progress", "--out", str(d / "fit")]
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"evo.fit failed ({proc.returncode}): {proc.stderr.strip()}")
        rep = json.loads((d / "fit" / "report.json").read_text())
    res = {"n_curves": n, "early_steps": E, "full_steps": F, "copies": a.copies, "max_seconds": a.max_seconds,
           "wall_seconds": wall, "cpu_seconds": cpu, "load_average": list(os.getloadavg()), "fit_seconds": rep["seconds"], "gens_run": rep["gens_run"], "gens": rep["gens"],
           "stopped_by_max_seconds": rep["stopped_by_max_seconds"], "is_blend": rep["is_blend"],
           "test_kendall_tau": rep["scores"]["formula"]["test_kendall_tau"],
           "last_loss_test_kendall_tau": rep["scores"]["last-loss"]["test_kendall_tau"]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"{n} curves (early {E} of {F} steps): evo.fit took {wall:.1f} s wall ({rep['seconds']:.1f} s "
          f"inside, {cpu:.1f} s of CPU; load average {os.getloadavg()[0]:.1f}), {rep['gens_run']}/{rep['gens']} generations"
          + (" (stopped by --max-seconds)" if rep["stopped_by_max_seconds"] else "")
          + f"; held-out tau {res['test_kendall_tau']:.3f} (last-loss {res['last_loss_test_kendall_tau']:.3f})")
    return res


if __name__ == "__main__":
    main()
