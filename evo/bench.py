"""`python -m evo.bench build`: train a random sample of a preset's space once, write a table.

    python -m evo.bench build --preset tiny --n 500 --out benchmarks/tables/tiny --workers 2

Architecture 0 is the preset's baseline, the rest are drawn uniformly from the space with --seed.
Each training is journaled as it finishes (`build.jsonl` in --out), so an interrupted build
resumes with the same command. `--noise N --noise-seeds K` trains the first N architectures with
K more seeds each, for the seed-noise record `seeds.csv`. The table format is in docs/TABLES.md.

    python -m evo.bench split benchmarks/tables/tiny --out A B [--seed 0] [--frac 0.5]

writes two tables with disjoint rows of one (A: --frac of them, drawn with --seed; B: the rest and
the baseline row), so that a search on B can be warm-started from A with no curve in both.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import platform
import random
import sys
import time
from pathlib import Path

from evo.checkpoint import JournalLineError, atomic_write, read_jsonl
from evo.evaluate import EvalTask
from evo.genome import eval_seed
from models.presets import PRESETS, get_preset, with_budgets


def _tasks(preset, n: int, seed: int, noise: int, noise_seeds: int, data: str | None) -> list[EvalTask]:
    rng = random.Random(seed)
    archs = [dict(preset.baseline)] + [preset.sample(rng) for _ in range(n - 1)]
    tasks = [EvalTask(key=f"a{i}", genes=g, preset=preset, steps=preset.full_steps,
                      seed=eval_seed(seed, g), data=data, phase="straight", meta={"arch": i, "rep": 0})
             for i, g in enumerate(archs)]
    for r in range(1, noise_seeds + 1):
        tasks += [EvalTask(key=f"a{i}-s{r}", genes=g, preset=preset, steps=preset.full_steps,
                           seed=eval_seed(seed + 1000 * r, g), data=data, phase="straight",
                           meta={"arch": i, "rep": r}) for i, g in enumerate(archs[:noise])]
    return tasks


def _journal(path: Path) -> dict[str, dict]:
    """The journaled trainings by key (torn last lines mended: evo.checkpoint.read_jsonl)."""
    try:
        recs = read_jsonl(path, lambda r: isinstance(r, dict) and isinstance(r.get("key"), str))
    except JournalLineError as e:
        raise ValueError(f"{path}:{e.line}: corrupt journal line {e.text[:80]!r}") from None
    return {r["key"]: r for r in recs}


@contextlib.contextmanager
def _appending(path: Path):
    """The journal opened for appending; a failure to flush it on close (a full disk) does not hide
    the error that stopped the build."""
    fh = open(path, "a")
    try:
        yield fh
    finally:
        try:
            fh.close()
        except OSError:
            pass


def _settings(a, preset, data_sha256: str | None) -> dict:
    """What makes a build: a resumed build must have the same, or its rows would mix two builds."""
    return {"preset": preset.name, "full_steps": preset.full_steps, "early_steps": preset.early_steps, "n": a.n, "seed": a.seed, "noise": a.noise,
            "noise_seeds": a.noise_seeds, "data_sha256": data_sha256}


def _check_settings(out: Path, settings: dict, journaled: bool) -> None:
    path = out / "build.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is unreadable ({e}); move it away to resume the build without the check")
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if diff:
            raise ValueError(f"{out} holds a build with other settings (there, now): {diff}; resume it with its "
                             f"own settings, or build in another --out")
    elif journaled:
        raise ValueError(f"{out} holds trainings ({out / 'build.jsonl'}) but no build.json with their settings "
                         f"(a build of an older version); build in another --out")
    else:
        atomic_write(path, json.dumps(settings, indent=1) + "\n")


def _fmt(x: float) -> str:
    return f"{x:.5f}"


def write_table(out: Path, preset, tasks: list[EvalTask], done: dict[str, dict], meta: dict) -> dict:
    """archs.csv, curves.csv, seeds.csv and table.json from the journaled results."""
    genes = list(preset.gene_names)
    archs, curves, seeds = io.StringIO(), io.StringIO(), io.StringIO()
    aw, cw, sw = (csv.writer(b, lineterminator="\n") for b in (archs, curves, seeds))
    aw.writerow(["arch_id", *genes, "n_params", "cost_per_step", "seed", "seconds_per_step", "tokens_per_s",
                 "diverged"])
    cw.writerow(["curve_id", "step", "split", "loss"])
    sw.writerow(["arch_id", "seed", "best_val_loss", "final_val_loss", "early_val_loss"])
    failed = 0
    for t in tasks:
        r = done[t.key]
        i, rep = t.meta["arch"], t.meta["rep"]
        if r.get("error") or not r.get("train_losses"):
            failed += 1
            continue
        vals = [(s, v) for s, v in zip(r["eval_steps"], r["val_losses"]) if v is not None]
        early = [v for s, v in vals if s <= preset.early_steps]
        sw.writerow([f"a{i}", t.seed, _fmt(r["best_val_loss"]),
                     "" if r["final_val_loss"] is None else _fmt(r["final_val_loss"]),
                     _fmt(early[-1]) if early else ""])
        if rep:
            continue
        steps = max(1, r["steps"])
        aw.writerow([f"a{i}", *[t.genes[g] for g in genes], r["n_params"], f"{r['flops'] / steps:.6g}", t.seed,
                     f"{r['wall_time'] / steps:.6g}", f"{r['tokens_per_s']:.6g}", int(bool(r["diverged"]))])
        for s, v in enumerate(r["train_losses"], 1):
            if v is not None:  # a diverged curve ends at its last finite point
                cw.writerow([f"a{i}", s, "train", _fmt(v)])
        for s, v, te in zip(r["eval_steps"], r["val_losses"], r["train_eval_losses"]):
            if v is not None:
                cw.writerow([f"a{i}", s, "val", _fmt(v)])
            if te is not None:
                cw.writerow([f"a{i}", s, "train_eval", _fmt(te)])
    out.mkdir(parents=True, exist_ok=True)
    (out / "archs.csv").write_text(archs.getvalue())
    (out / "curves.csv").write_text(curves.getvalue())
    (out / "seeds.csv").write_text(seeds.getvalue())
    doc = {"format": "dimorph-table", "version": 1, "name": preset.name, "full_steps": preset.full_steps,
           "early_steps": preset.early_steps, "genes": genes, "cost_unit": "training FLOPs",
           "target": "best validation loss over the full budget", "baseline": "a0",
           "log_genes": [p.name for p in preset.space if getattr(p, "log", False)],
           "failed_trainings": failed, **meta}
    (out / "table.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def build(a) -> dict:
    from evo.evaluate import token_data
    from models.data import load_dataset

    if a.full_steps is not None and a.full_steps < 2:
        raise ValueError(f"--full-steps must be >= 2, got {a.full_steps}")
    # the preset validates early_frac
    preset = with_budgets(get_preset(a.preset), a.full_steps, getattr(a, "early_frac", None))
    if a.n < 2:
        raise ValueError(f"--n must be >= 2, got {a.n}")
    if not 0 <= a.noise <= a.n:
        raise ValueError(f"--noise must be in [0, --n={a.n}], got {a.noise}")
    ds = load_dataset(a.data)
    token_data(a.data, preset)  # fail here, not in every worker, if the data is unusable
    from evo.checkpoint import lock_folder

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_folder(out, out / "build.lock", "build")
    try:
        return _build(a, preset, ds, out)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the finished trainings are journaled in {out / 'build.jsonl'}; run the same "
              f"command to resume", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        lock.close()


def _build(a, preset, ds, out: Path) -> dict:
    import torch

    from evo.executors import ProcessExecutor, SerialExecutor

    jpath = out / "build.jsonl"
    tasks = _tasks(preset, a.n, a.seed, a.noise, a.noise_seeds, a.data)
    done = _journal(jpath)
    _check_settings(out, _settings(a, preset, _sha256(ds.source)), journaled=bool(done))
    todo = [t for t in tasks if t.key not in done]
    t0 = time.perf_counter()
    ex = ProcessExecutor(a.workers) if a.workers > 0 else SerialExecutor()
    tty = sys.stdout.isatty()
    with ex, _appending(jpath) as fh:
        for k, r in enumerate(ex.run(todo), 1):
            r = {k2: v for k2, v in r.items() if k2 != "traceback"}
            try:
                fh.write(json.dumps(r) + "\n")
                fh.flush()
            except OSError as e:  # a full disk: stop; what is journaled is kept, the rest is retrained
                raise ValueError(f"cannot write {jpath} ({e.strerror or e}); the build stopped and what it "
                                 f"journaled is kept: free space, then run the same command to resume") from None
            done[r["key"]] = r
            if tty or k % 25 == 0 or k == len(todo):
                el = time.perf_counter() - t0
                msg = (f"{len(done)}/{len(tasks)} trainings | {el:.0f} s | "
                       f"eta {el / k * (len(todo) - k):.0f} s")
                print(("\r" + msg) if tty else msg, end="" if tty else "\n", flush=True)
    if tty:
        print()
    meta = {"preset_config": _preset_doc(preset), "seed": a.seed, "n": a.n, "noise_archs": a.noise,
            "noise_seeds": a.noise_seeds, "data_sha256": _sha256(ds.source),
            "build_seconds": sum(r.get("eval_seconds", 0.0) for r in done.values()),
            "workers": a.workers, "versions": {"python": platform.python_version(), "torch": torch.__version__},
            "machine": platform.machine()}
    doc = write_table(out, preset, tasks, done, meta)
    print(f"table written to {out}: {a.n} architectures, {doc['failed_trainings']} failed trainings, "
          f"{meta['build_seconds']:.0f} s of training")
    return doc


def _sha256(source: str) -> str | None:
    p = Path(source)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def _preset_doc(preset) -> dict:
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(preset).items() if k not in ("space", "baseline")}


def describe(directory: str) -> dict:
    """A table's numbers: size, target spread, seed noise (seeds.csv), SNR, early-vs-final rank agreement."""
    import numpy as np
    from scipy.stats import kendalltau

    from evo.table import Table

    t = Table(directory)
    y = t.targets[np.isfinite(t.targets)]
    early = np.array([t.result(i, t.early_steps)["val_losses"][-1] for i in range(len(t.ids))], dtype=float)
    ok = np.isfinite(early) & np.isfinite(t.targets)
    out = {"archs": len(t.ids), "finite_targets": int(len(y)), "best": float(y.min()), "median": float(np.median(y)),
           "worst": float(y.max()), "signal_std": float(y.std(ddof=1)),
           "early_steps": t.early_steps, "full_steps": t.full_steps,
           "tau_last_early_val_vs_target": float(kendalltau(early[ok], t.targets[ok])[0]),
           "mean_full_cost": t.mean_full_cost(), "cost_unit": t.meta["cost_unit"]}
    seeds = Path(directory) / "seeds.csv"
    if seeds.is_file():
        by: dict[str, list[float]] = {}
        with open(seeds, newline="") as fh:
            for row in csv.DictReader(fh):
                by.setdefault(row["arch_id"], []).append(float(row["best_val_loss"]))
        stds = [np.std(v, ddof=1) for v in by.values() if len(v) > 1]
        if stds:
            out["noise_archs"], out["noise_seeds"] = len(stds), int(np.mean([len(v) for v in by.values() if len(v) > 1]))
            out["seed_noise_std"] = float(np.mean(stds))
            out["snr"] = out["signal_std"] / out["seed_noise_std"]
    sps = [float(e["seconds_per_step"]) for e in t.extra if e.get("seconds_per_step")]
    if sps:
        out["mean_full_training_s"] = float(np.mean(sps) * t.full_steps)
    return out


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, [row for row in reader if row]


def _write_rows(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def split(directory: str, out_a: str, out_b: str, seed: int = 0, frac: float = 0.5) -> tuple[dict, dict]:
    """Write two valid tables with disjoint rows of the table in `directory`: A gets round(frac * n)
    rows drawn with `seed` from those other than the baseline row, B the rest and the baseline row
    (a search on B then starts from the same architecture as one on the whole table). Rows keep
    their order; archs.csv, curves.csv and seeds.csv (when present) are cut by arch_id; table.json
    is copied with its name suffixed -A / -B, `baseline` set (A: its first row) and a `split` record.
    Returns the two table.json documents."""
    import numpy as np

    from evo.table import Table

    src = Path(directory)
    t = Table(src)  # refuses a malformed table before anything is written
    if not 0 < frac < 1:
        raise ValueError(f"--frac must be in (0, 1), got {frac}")
    outs = [Path(out_a), Path(out_b)]
    if len({p.resolve() for p in outs + [src]}) != 3:
        raise ValueError(f"--out needs two directories, distinct from each other and from {src}, got "
                         f"{out_a} and {out_b}")
    for p in outs:
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise ValueError(f"--out {p} exists and is not an empty directory")
    base = t.meta.get("baseline")
    base_id = str(base) if base is not None and str(base) in t.index else t.ids[0]
    others = [a for a in t.ids if a != base_id]
    n_a = round(frac * len(t.ids))
    if not 2 <= n_a <= len(t.ids) - 2:
        raise ValueError(f"--frac {frac} of {len(t.ids)} rows gives {n_a} and {len(t.ids) - n_a}; "
                         f"a table needs at least 2 rows")
    picked = {others[j] for j in np.random.default_rng(seed).permutation(len(others))[:n_a]}
    parts = {"A": [a for a in t.ids if a in picked], "B": [a for a in t.ids if a not in picked]}
    name = t.meta.get("name", src.resolve().name)
    archs_h, archs = _rows(src / "archs.csv")
    curves_h, curves = _rows(src / "curves.csv")
    seeds = _rows(src / "seeds.csv") if (src / "seeds.csv").is_file() else None
    docs = []
    for (part, ids), out in zip(parts.items(), outs):
        keep = set(ids)
        out.mkdir(parents=True, exist_ok=True)
        col = archs_h.index("arch_id")
        _write_rows(out / "archs.csv", archs_h, (r for r in archs if r[col].strip() in keep))
        col = curves_h.index("curve_id")
        _write_rows(out / "curves.csv", curves_h, (r for r in curves if r[col].strip() in keep))
        if seeds is not None and "arch_id" in seeds[0]:
            col = seeds[0].index("arch_id")
            _write_rows(out / "seeds.csv", seeds[0], (r for r in seeds[1] if r[col].strip() in keep))
        doc = {**t.meta, "name": f"{name}-{part}", "baseline": base_id if part == "B" else ids[0],
               "split": {"of": name, "source": str(src), "part": part, "seed": seed, "frac": frac,
                         "rows": len(ids), "source_rows": len(t.ids)}}
        (out / "table.json").write_text(json.dumps(doc, indent=1) + "\n")
        Table(out)  # the written table loads
        docs.append(doc)
    print(f"split {src} ({len(t.ids)} rows): {len(parts['A'])} rows to {outs[0]}, "
          f"{len(parts['B'])} (baseline {base_id} among them) to {outs[1]}")
    return docs[0], docs[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evo.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train a random sample of a preset's space and write a table")
    b.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    b.add_argument("--n", type=int, default=500, help="architectures (the baseline is the first)")
    b.add_argument("--seed", type=int, default=0, help="draws the architectures and their training seeds")
    b.add_argument("--noise", type=int, default=30, help="architectures trained with extra seeds")
    b.add_argument("--noise-seeds", type=int, default=2, help="extra seeds for each of those")
    b.add_argument("--full-steps", type=int, default=None, help="override the preset's full budget")
    b.add_argument("--early-frac", type=float, default=None, help="override the preset's early budget fraction")
    b.add_argument("--workers", type=int, default=2, help="worker processes (0: in this process)")
    b.add_argument("--data", default=None, help="a UTF-8 text file (default: Tiny Shakespeare)")
    b.add_argument("--out", required=True, help="table directory (resumes a build found there)")
    d = sub.add_parser("describe", help="print a table's size, target spread, seed noise and SNR as JSON")
    d.add_argument("table", help="table directory")
    s = sub.add_parser("split", help="write two tables with disjoint rows of one (A: --frac of them; B: the rest "
                                     "and the baseline)")
    s.add_argument("table", help="table directory")
    s.add_argument("--out", nargs=2, required=True, metavar=("A", "B"), help="the two new table directories")
    s.add_argument("--seed", type=int, default=0, help="draws A's rows")
    s.add_argument("--frac", type=float, default=0.5, help="fraction of the rows that go to A")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "describe":
            print(json.dumps(describe(a.table), indent=1))
            return 0
        if a.cmd == "split":
            split(a.table, *a.out, seed=a.seed, frac=a.frac)
            return 0
        build(a)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
