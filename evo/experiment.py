"""`python -m evo.experiment`: the four modes and the peers (evo.peers) at one training-FLOPs budget, over seeds.

Each method-seed is one MLflow parent run and leaves a small record (runs/<method>-seed<s>.json) when
it finishes; a rerun skips finished records and resumes unfinished searches from their checkpoints
(ckpt/<method>-seed<s>/). table.md, table.csv and the figures are rebuilt from the records.
See docs/EXPERIMENTS.md.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from evo.checkpoint import Checkpoint, read_snapshot
from evo.config import MODES, Config
from evo.peers import PEERS, missing

METHODS = MODES + PEERS
# the default budget, in full trainings of the preset's baseline; docs/EXPERIMENTS.md has the arithmetic
DEFAULT_BUDGET_TRAININGS = 40
NUMBERS = ("final_train_loss", "best_val_loss", "train_time_s", "inference_tokens_per_s")
COST = ("flops", "full_trainings", "best_val_at_budget")


def parse_seeds(values: list[str]) -> list[int]:
    """One integer N means seeds 0..N-1; several values (or a comma list) are the seeds themselves."""
    items = [x for v in values for x in str(v).split(",") if x.strip()]
    try:
        nums = [int(x) for x in items]
    except ValueError:
        raise ValueError(f"seeds must be integers, got {values!r}") from None
    if not nums:
        raise ValueError(f"no seeds given: {values!r}")
    if len(nums) == 1 and "," not in "".join(map(str, values)):
        if nums[0] < 1:
            raise ValueError(f"a seed count must be >= 1, got {nums[0]}")
        return list(range(nums[0]))
    if len(set(nums)) != len(nums):
        raise ValueError(f"seeds must be distinct, got {nums}")
    return nums


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check the command line; bad values raise ValueError naming them."""
    ap = argparse.ArgumentParser(prog="python -m evo.experiment", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seeds", nargs="+", default=["3"], help="a count N (seeds 0..N-1) or a list: 0,1,2")
    ap.add_argument("--budget-flops", type=float, default=None, help="training FLOPs per method-seed "
                    f"(default: --budget-trainings x one full training of the preset's baseline)")
    ap.add_argument("--budget-trainings", type=float, default=DEFAULT_BUDGET_TRAININGS,
                    help="the budget in full trainings of the preset's baseline, when --budget-flops is not given")
    ap.add_argument("--methods", default=",".join(m for m in METHODS if not missing(m)),
                    help=f"comma list of {', '.join(METHODS)} (default: all whose package is installed)")
    ap.add_argument("--out", default="results/experiment", help="results folder (results/<name>)")
    ap.add_argument("--full-steps", type=int, default=None, help="override the preset's full budget")
    ap.add_argument("--early-frac", type=float, default=None, help="override the preset's early fraction")
    ap.add_argument("--experiment", default="dimorph-experiment", help="MLflow experiment name")
    ap.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db)")
    ap.add_argument("--data", default=None, help="text dataset (default: $DIMORPH_DATA or the cache)")
    ap.add_argument("--workers", type=int, default=0, help="local worker processes per search")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per training")
    ap.add_argument("--asha-sampler", choices=("tpe", "random"), default="tpe")
    ap.add_argument("--asha-eta", type=int, default=3, help="ASHA reduction factor")
    ap.add_argument("--re-population", type=int, default=8, help="aging evolution population P")
    ap.add_argument("--re-sample", type=int, default=3, help="aging evolution tournament sample S")
    ap.add_argument("--table", default=None, help="run every method against this table by lookup "
                    "(docs/TABLES.md): many seeds in minutes, paired statistics, no MLflow")
    ap.add_argument("--budgets", default=None, help="with --table: comma list of budgets in mean full "
                    "trainings of the table (default: 10,20,40,80)")
    ap.add_argument("--json", action="store_true", help="with --table: print one JSON object on the last line")
    ap.add_argument("--inference-samples", type=int, default=10)
    ap.add_argument("--inference-tokens", type=int, default=500)
    a = ap.parse_args(argv)
    a.seeds = parse_seeds(a.seeds)
    a.methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in a.methods if m not in METHODS]
    if bad or not a.methods:
        raise ValueError(f"unknown method(s) {bad or a.methods}; choose from {', '.join(METHODS)}")
    if a.budget_flops is not None and not a.budget_flops > 0:
        raise ValueError(f"--budget-flops must be > 0, got {a.budget_flops}")
    if not a.budget_trainings > 0:
        raise ValueError(f"--budget-trainings must be > 0, got {a.budget_trainings}")
    for name in ("asha_eta", "re_population", "re_sample"):
        if getattr(a, name) < (2 if name != "re_sample" else 1):
            raise ValueError(f"--{name.replace('_', '-')} is too small: {getattr(a, name)}")
    return a


def _budgets(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--budgets must be a comma list of numbers, got {text!r}") from None
    if not vals or not all(v > 0 and math.isfinite(v) for v in vals):
        raise ValueError(f"--budgets must be positive numbers, got {text!r}")
    return sorted(vals)


def baseline_flops(preset_name: str, full_steps: int | None, data: str | None) -> float:
    """Training FLOPs of one full training of the preset's baseline (what the trainer would count)."""
    from evo.evaluate import token_data
    from models.gpt import GPT
    from models.presets import get_preset, with_budgets

    p = with_budgets(get_preset(preset_name), full_steps)
    gpt_cfg, tc = p.configs(p.baseline, token_data(data, p).vocab_size)
    return GPT(gpt_cfg).flops_per_token() * tc.batch_size * p.block_size * p.full_steps


def method_config(a, method: str, seed: int) -> Config:
    """The run config of one method-seed (peers use its shared fields)."""
    out = Path(a.out) / "ckpt" / f"{method}-seed{seed}"
    return Config(mode=method if method in MODES else "baseline", preset=a.preset, seed=seed,
                  gens=100_000, budget_flops=a.budget_flops, full_steps=a.full_steps, early_frac=a.early_frac,
                  experiment=a.experiment, tracking_uri=a.tracking_uri, out=str(out), data=a.data,
                  workers=a.workers, threads=a.threads, inference_samples=a.inference_samples,
                  inference_tokens=a.inference_tokens, progress=False,
                  resume=method in MODES and (out / "checkpoint.json").exists())


def peer_options(a, method: str) -> dict:
    """The command line's settings for one peer method."""
    halving = {"sampler": a.asha_sampler, "reduction_factor": a.asha_eta}
    return {"asha": halving, "hyperband": halving,
            "evolution": {"population": a.re_population, "sample": a.re_sample}}.get(method, {})


def run_one(a, method: str, seed: int) -> dict:
    """Run one method-seed (or resume it) and write its record; a finished record is returned as is."""
    path = Path(a.out) / "runs" / f"{method}-seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    cfg = method_config(a, method, seed)
    t0 = time.perf_counter()
    if method in MODES:
        from evo.run import main as run_main
        summary = run_main(cfg)
        history = [{"flops": r["cost/flops"], "best_val_loss": r["arch/best_val_loss"],
                    "full_trainings": r["cost/full_trainings"]} for r in read_snapshot(cfg.out_dir)["logbook"]]
    else:
        from evo.executors import make_executor
        from evo.peers import run_peer
        from evo.tracking import Tracker
        with make_executor(cfg) as ex:
            summary = run_peer(cfg, method, Tracker(cfg.tracking_uri, cfg.experiment), ex, **peer_options(a, method))
        history = summary["history"]
    rec = {"method": method, "seed": seed, "budget_flops": a.budget_flops, "best": summary["best"],
           "compute": summary["compute"], "history": history, "mlflow": summary["mlflow"],
           "curves": best_curves(cfg.out_dir, (summary["best"] or {}).get("key")),
           "predictor": predictor_points(cfg, summary) if method in ("female", "combined") else None,
           "wall_s": time.perf_counter() - t0}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=1, default=str))
    tmp.replace(path)
    return rec


def _journal(out_dir: Path) -> Checkpoint:
    return Checkpoint(out_dir, read_snapshot(out_dir)["search"], resume=True)


def best_curves(out_dir: Path, key: str | None) -> dict | None:
    """Train and val curves of the selected architecture, from its longest journaled training."""
    if key is None:
        return None
    ck = _journal(out_dir)
    runs = [v for k, v in ck.journal.items() if k == f"eval/{key}" or k.startswith(f"eval/{key}/")]
    res = max(runs, key=lambda r: r.get("steps") or 0)
    return {k: res.get(k) for k in ("train_losses", "eval_steps", "val_losses", "train_eval_losses")}


def predictor_points(cfg: Config, summary: dict) -> dict | None:
    """The final champion female applied to the final archive: calibrated prediction vs true target."""
    from evo.females import Females
    from evo.ledger import records_from_rows
    from primitives.fitness import kendall_tau

    tree = (summary.get("predictor") or {}).get("tree")
    archive = records_from_rows(read_snapshot(cfg.out_dir)["archive"])
    if not tree or len(archive) < 2:
        return None
    fem = Females(cfg.arch_features)
    champ = fem.from_strings([tree])[0]
    pred = fem.predict_losses(champ, archive, archive)
    hold = fem.split(archive)
    y = np.array([r.target for r in archive])
    return {"sympy": summary["predictor"]["sympy"], "true": y.tolist(), "predicted": pred.tolist(),
            "holdout": hold.tolist(), "tau_all": kendall_tau(pred, y),
            "tau_holdout": kendall_tau(pred[hold], y[hold]) if hold.any() else None}


def at_budget(rec: dict) -> float:
    """Best val loss among the trainings finished while the compute used was within the budget."""
    pts = [h["best_val_loss"] for h in rec["history"]
           if h["flops"] <= rec["budget_flops"] and h["best_val_loss"] is not None]
    pts = [p for p in pts if math.isfinite(p)]
    return min(pts) if pts else math.nan


def table_rows(records: list[dict], methods: list[str]) -> list[dict]:
    """Per method: mean and std over seeds of the four numbers, compute used and full trainings."""
    rows = []
    for m in methods:
        recs = [r for r in records if r["method"] == m]
        if not recs:
            continue
        row = {"method": m, "seeds": len(recs)}
        for name in NUMBERS + COST:
            src = [at_budget(r) if name == "best_val_at_budget" else
                   (r["compute"] if name in COST else r["best"] or {}).get(name) for r in recs]
            v = np.array([math.nan if x is None else float(x) for x in src])
            row[f"{name}_mean"] = float(v.mean())
            row[f"{name}_std"] = float(v.std(ddof=1)) if len(v) > 1 else math.nan
        rows.append(row)
    return rows


def write_table(rows: list[dict], out: Path, note: str) -> tuple[Path, Path]:
    """table.csv (every column) and table.md (mean ± std)."""
    cols = ["method", "seeds"] + [f"{n}_{s}" for n in NUMBERS + COST for s in ("mean", "std")]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    (out / "table.csv").write_text(buf.getvalue())
    fmt = {"final_train_loss": "{:.4f}", "best_val_loss": "{:.4f}", "train_time_s": "{:.1f}",
           "inference_tokens_per_s": "{:.0f}", "flops": "{:.3g}", "full_trainings": "{:.1f}", "best_val_at_budget": "{:.4f}"}

    def cell(r, n):
        mean, std = r[f"{n}_mean"], r[f"{n}_std"]
        return fmt[n].format(mean) + ("" if math.isnan(std) else " ± " + fmt[n].format(std))

    lines = [note, "", "| method | seeds | final train loss | best val loss | train time (s) | "
             "inference (tokens/s) | compute (FLOPs) | full trainings | best val within budget |", "|---" * 9 + "|"]
    lines += ["| " + " | ".join([r["method"], str(r["seeds"])] + [cell(r, n) for n in NUMBERS + COST]) + " |"
              for r in rows]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    return out / "table.md", out / "table.csv"


def main(argv=None) -> dict:
    """Run every method-seed (skipping finished ones), then write the table and figures."""
    a = parse_args(argv)
    if a.table:
        from evo import tablestats
        budgets = tablestats.DEFAULT_BUDGETS if a.budgets is None else _budgets(a.budgets)
        out = Path(a.out if a.out != "results/experiment" else f"results/table-{Path(a.table).name}")
        workers = a.workers if a.workers > 0 else (os.cpu_count() or 1)
        return tablestats.run(a.table, a.methods, a.seeds, list(budgets), out, workers=workers,
                              as_json=a.json)
    if a.budget_flops is None:
        a.budget_flops = a.budget_trainings * baseline_flops(a.preset, a.full_steps, a.data)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in a.seeds:
        for m in a.methods:
            t0 = time.perf_counter()
            rec = run_one(a, m, seed)
            b = rec["best"] or {}
            print(f"[{m} seed {seed}] best val {b.get('best_val_loss', math.nan):.4f} | "
                  f"{rec['compute']['flops']:.3g} FLOPs, {rec['compute']['full_trainings']} full trainings | "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            records.append(rec)
    rows = table_rows(records, a.methods)
    note = (f"preset {a.preset}, budget {a.budget_flops:.3g} training FLOPs per method-seed, seeds "
            f"{a.seeds}, full steps {a.full_steps or 'preset'}, early fraction {a.early_frac or 'preset'}; "
            f"mean ± std over seeds of the selected architecture's numbers")
    files = list(write_table(rows, out, note))
    from evo.figures import all_figures
    files += all_figures(records, a.methods, out)
    print((out / "table.md").read_text())
    print("files: " + ", ".join(str(f) for f in files))
    return {"rows": rows, "records": records, "files": [str(f) for f in files]}


def cli(argv=None) -> int:
    """`python -m evo.experiment`: main(), with bad input as one line and exit code 2."""
    try:
        main(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
