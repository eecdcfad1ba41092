"""`python -m evo.curves`: the learning curves of MLflow runs as `evo.predict` CSV files.

    # a Dimorph search: its children's train/loss and val/loss; finals of the fully trained ones
    python -m evo.curves --run-id PARENT_RUN_ID [--tracking-uri URI] --out DIR
    # any experiment: the metric keys your runs logged
    python -m evo.curves --experiment NAME --train-metric loss [--val-metric val_loss] \
        [--final-metric best_val_loss | --full-steps F] [--n-params-key K --lr-key K] --out DIR

Writes DIR/curves.csv (curve_id,step,split,loss), DIR/finals.csv (curve_id,final_loss) when some
run has a final, and DIR/meta.csv (curve_id,n_params,lr) when some run has both; these are the
inputs of `evo.fit` and `evo.predict` (README "The CSV format of `evo.predict`").

Finals. A Dimorph search: `arch/best_val_loss` of each child trained to the full budget (not
diverged, no error). An experiment: the latest value of --final-metric; without it, the best
(smallest) value of --val-metric, over the steps <= --full-steps when given (then only runs whose
--val-metric reaches that step get a final). Only FINISHED runs of an experiment get a final.
A curve_id is the evaluation key of a Dimorph child, the run id of an experiment's run. Runs
without a point of the train metric are left out (counted in the summary). Reading never writes
to the store. mlflow is imported by evo.tracking only.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from evo.predict import parse_args_or_exit_code

PROG = "python -m evo.curves"


def _final_from_val(val: list[tuple[int, float]], full_steps: int | None) -> float | None:
    """The best validation value (at steps <= full_steps, which the curve must reach)."""
    if full_steps is not None:
        if not val or val[-1][0] < full_steps:
            return None
        val = [p for p in val if p[0] <= full_steps]
    return min((v for _, v in val), default=None)


def collect(args) -> tuple[list[dict], dict]:
    """The runs (curve_id, train, val, final, n_params, lr) and facts for the summary."""
    from evo import tracking

    if args.run_id:
        res = tracking.search_curves(args.run_id, args.tracking_uri)
        return res["runs"], {"early_steps": res["early_steps"], "full_steps": res["full_steps"],
                             "source": f"search run {args.run_id}"}
    runs = tracking.experiment_curves(args.experiment, args.train_metric, args.val_metric,
                                      args.final_metric, args.tracking_uri,
                                      n_params_key=args.n_params_key, lr_key=args.lr_key)
    for r in runs:
        if r["status"] != "FINISHED":
            r["final"] = None
        elif not args.final_metric and args.val_metric:
            r["final"] = _final_from_val(r["val"], args.full_steps)
    return runs, {"early_steps": None, "full_steps": args.full_steps,
                  "source": f"experiment {args.experiment!r}"}


def write_csvs(runs: list[dict], out: Path) -> dict:
    """curves.csv, finals.csv and meta.csv of the runs with train points; counts of what was written."""
    out.mkdir(parents=True, exist_ok=True)
    kept = [r for r in runs if r["train"]]
    with open(out / "curves.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["curve_id", "step", "split", "loss"])
        for r in kept:
            w.writerows([r["curve_id"], s, "train", repr(v)] for s, v in r["train"])
            w.writerows([r["curve_id"], s, "val", repr(v)] for s, v in r["val"])
    finals = [r for r in kept if r["final"] is not None]
    if finals:
        with open(out / "finals.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["curve_id", "final_loss"])
            w.writerows([r["curve_id"], repr(r["final"])] for r in finals)
    meta = [r for r in kept if (r["n_params"] or 0) > 0 and (r["lr"] or 0) > 0]
    if meta:
        with open(out / "meta.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["curve_id", "n_params", "lr"])
            w.writerows([r["curve_id"], repr(r["n_params"]), repr(r["lr"])] for r in meta)
    return {"runs": len(runs), "curves": len(kept), "skipped": len(runs) - len(kept),
            "finals": len(finals), "meta": len(meta)}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-id", help="the parent run id of a Dimorph search")
    src.add_argument("--experiment", help="an MLflow experiment name (with --train-metric)")
    ap.add_argument("--train-metric", help="metric key of the training loss (with --experiment)")
    ap.add_argument("--val-metric", help="metric key of the validation loss (with --experiment)")
    ap.add_argument("--final-metric", help="metric key of the target (with --experiment; default: "
                    "the best --val-metric value)")
    ap.add_argument("--full-steps", type=int, default=None,
                    help="with --experiment and no --final-metric: the final is the best "
                         "--val-metric value at steps <= F, for runs that reach F")
    ap.add_argument("--n-params-key", help="param or metric holding the parameter count (meta.csv)")
    ap.add_argument("--lr-key", help="param or metric holding the learning rate (meta.csv)")
    ap.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: "
                    "$MLFLOW_TRACKING_URI, else ./mlflow.db, which must exist)")
    ap.add_argument("--out", required=True, help="folder for curves.csv, finals.csv, meta.csv")
    return ap


def main(argv=None) -> int:
    args = parse_args_or_exit_code(build_parser(), argv)
    if isinstance(args, int):  # --help, or a bad flag (argparse printed why)
        return args
    if args.experiment and not args.train_metric:
        print(f"{PROG}: error: --experiment needs --train-metric", file=sys.stderr)
        return 2
    if args.run_id and (args.train_metric or args.val_metric or args.final_metric
                        or args.n_params_key or args.lr_key or args.full_steps is not None):
        print(f"{PROG}: error: a Dimorph search (--run-id) has fixed metric keys; the metric "
              f"options go with --experiment", file=sys.stderr)
        return 2
    if args.full_steps is not None and args.full_steps <= 0:
        print(f"{PROG}: error: --full-steps must be > 0, got {args.full_steps}", file=sys.stderr)
        return 2
    from evo.tracking import TrackingError

    try:
        runs, facts = collect(args)
        counts = write_csvs(runs, Path(args.out))
    except (TrackingError, OSError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    files = "curves.csv" + (", finals.csv" if counts["finals"] else "") + \
        (", meta.csv" if counts["meta"] else "")
    print(f"{facts['source']}: {counts['curves']} curve(s) written, {counts['finals']} with a final, "
          f"{counts['meta']} with n_params and lr"
          + (f"; {counts['skipped']} run(s) without a train point left out" if counts["skipped"]
             else ""))
    print(f"files in {args.out}: {files}")
    if counts["finals"] and facts["full_steps"]:
        early = facts["early_steps"] or max(1, facts["full_steps"] // 10)
        meta = f" --meta {args.out}/meta.csv" if counts["meta"] else ""
        print(f"next: python -m evo.fit --curves {args.out}/curves.csv --finals {args.out}/finals.csv "
              f"--early-steps {early} --full-steps {facts['full_steps']}{meta} --out predictor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
