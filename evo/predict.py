"""Apply an exported predictor (or a built-in one) to learning curves given as CSV.

python -m evo.predict --curves curves.csv --early-steps 60 --full-steps 600 \
    --formula best_predictor.json [--finals finals.csv] [--meta meta.csv] [--out pred.csv] [--json]

The CSV formats are in README.md ("Predicting final losses from CSV curves").
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys

import numpy as np

from primitives.baselines import BASELINES
from primitives.export import load_predictor
from primitives.features import ALL_FEATURES, curve_features
from primitives.fitness import kendall_tau, spearman

PROG = "python -m evo.predict"


class InputError(Exception):
    """A problem with the user's input files; reported with exit code 2."""


def _rows(path: str, required: tuple[str, ...]):
    """Yield (line number, row dict) of a CSV file, checking the header has the required columns."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise InputError(f"{path}:1: missing column {missing[0]!r} (header {header})")
            for row in reader:
                if all(not (v or "").strip() for k, v in row.items() if k is not None):
                    continue  # blank line
                if None in row or any(row[c] is None for c in required):
                    raise InputError(f"{path}:{reader.line_num}: expected {len(header)} fields")
                yield reader.line_num, {c: row[c].strip() for c in required}
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{path}: not a readable CSV file: {err}") from None


def _number(text: str, what: str, where: str, positive: bool = False) -> float:
    """A finite float (optionally > 0) parsed from a CSV field."""
    try:
        x = float(text)
    except ValueError:
        raise InputError(f"{where}: {what} must be a number, got {text!r}") from None
    if not math.isfinite(x) or (positive and x <= 0):
        kind = "a finite positive number" if positive else "finite"
        raise InputError(f"{where}: {what} must be {kind}, got {text!r}")
    return x


def read_curves(path: str, early_steps: int) -> dict[str, dict]:
    """curve_id -> {"train": (steps, losses), "val": (...), "line": first line}; early points."""
    curves: dict[str, dict] = {}
    for line, row in _rows(path, ("curve_id", "step", "split", "loss")):
        where = f"{path}:{line}"
        if not row["curve_id"]:
            raise InputError(f"{where}: empty curve_id")
        if not row["step"].isdigit():
            raise InputError(f"{where}: step must be a non-negative integer, got {row['step']!r}")
        if row["split"] not in ("train", "val"):
            raise InputError(f"{where}: split must be 'train' or 'val', got {row['split']!r}")
        loss = _number(row["loss"], "loss", where)
        c = curves.setdefault(row["curve_id"], {"train": ([], []), "val": ([], []), "line": line})
        step = int(row["step"])
        if step <= early_steps:
            c[row["split"]][0].append(step)
            c[row["split"]][1].append(loss)
    if not curves:
        raise InputError(f"{path}: no data rows")
    for cid, c in curves.items():
        if len(c["train"][0]) < 2:
            raise InputError(f"{path}:{c['line']}: curve {cid!r} has {len(c['train'][0])} train "
                             f"point(s) with step <= {early_steps}; at least two are needed")
    return curves


def read_table(path: str, columns: tuple[str, ...],
               positive: bool) -> dict[str, tuple[float, ...]]:
    """curve_id -> finite (optionally positive) numbers of the given columns, one row per id."""
    out: dict[str, tuple[float, ...]] = {}
    for line, row in _rows(path, ("curve_id",) + columns):
        where = f"{path}:{line}"
        if row["curve_id"] in out:
            raise InputError(f"{where}: duplicate curve_id {row['curve_id']!r}")
        out[row["curve_id"]] = tuple(_number(row[c], c, where, positive) for c in columns)
    return out


def predict_all(args, curves: dict[str, dict]) -> tuple[dict[str, float], bool]:
    """Predictions per curve and whether they are in loss units (MAE meaningful)."""
    if args.predictor:
        func = BASELINES[args.predictor]
        preds = {cid: func(*c["train"], *c["val"], args.early_steps, args.full_steps)
                 for cid, c in curves.items()}
        return preds, args.predictor != "sotl"
    try:
        predictor = load_predictor(args.formula)
    except ValueError as err:
        raise InputError(str(err)) from None
    unknown = [n for n in predictor.features if n not in ALL_FEATURES]
    if unknown:
        raise InputError(f"{args.formula}: unknown feature {unknown[0]!r}")
    meta = read_table(args.meta, ("n_params", "lr"), positive=True) if args.meta else {}
    needs_meta = [n for n in predictor.features if n in ("log_params", "log_lr")]
    if needs_meta and not args.meta:
        raise InputError(f"{args.formula}: the formula uses {needs_meta[0]!r}; "
                         f"give --meta FILE with columns curve_id,n_params,lr")
    preds = {}
    for cid, c in curves.items():
        if needs_meta and cid not in meta:
            raise InputError(f"{args.meta}: no row for curve {cid!r}, whose formula needs "
                             f"{needs_meta[0]!r}")
        n_params, lr = meta.get(cid, (None, None))
        feats = curve_features(*c["train"], *c["val"], args.early_steps, args.full_steps,
                               n_params=n_params, lr=lr)
        preds[cid] = predictor(feats)
    return preds, True


def scores(preds: dict[str, float], finals: dict[str, tuple[float, ...]], mae_ok: bool) -> dict:
    """Kendall tau-b, Spearman and MAE (None when not in loss units) over curves with a final."""
    ids = [cid for cid in preds if cid in finals]
    p = np.array([preds[c] for c in ids])
    t = np.array([finals[c][0] for c in ids])
    mae = float(np.abs(p - t).mean()) if (mae_ok and ids) else None
    return {"n": len(ids), "kendall_tau": kendall_tau(p, t), "spearman": spearman(p, t),
            "mae": mae}


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("--curves", required=True, help="CSV: curve_id,step,split,loss")
    ap.add_argument("--early-steps", type=int, required=True, help="use points with step <= E")
    ap.add_argument("--full-steps", type=int, required=True, help="the full training budget F")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--formula", help="an exported predictor JSON")
    src.add_argument("--predictor", choices=sorted(BASELINES), help="a built-in predictor")
    ap.add_argument("--finals", help="CSV: curve_id,final_loss (enables the scores)")
    ap.add_argument("--meta", help="CSV: curve_id,n_params,lr (for log_params, log_lr)")
    ap.add_argument("--out", help="write the prediction rows here instead of stdout")
    ap.add_argument("--json", action="store_true",
                    help="print only the scores as JSON on stdout (needs --finals)")
    return ap


def main(argv=None) -> int:
    """Run the CLI; returns the exit code (2 for bad input)."""
    ap = build_parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.early_steps <= 0 or args.full_steps < args.early_steps:
            raise InputError(f"need 0 < --early-steps <= --full-steps, got "
                             f"{args.early_steps} and {args.full_steps}")
        if args.json and not args.finals:
            raise InputError("--json needs --finals")
        curves = read_curves(args.curves, args.early_steps)
        finals = read_table(args.finals, ("final_loss",), positive=False) if args.finals else None
        preds, mae_ok = predict_all(args, curves)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["curve_id", "predicted_final"])
        writer.writerows([c, repr(float(p))] for c, p in preds.items())
        rows = buf.getvalue()
        if args.out:
            with open(args.out, "w", encoding="utf-8") as fh:
                fh.write(rows)
        elif not args.json:
            sys.stdout.write(rows)
    except (InputError, ValueError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    if finals is None:
        return 0
    s = scores(preds, finals, mae_ok)
    skipped = sum(1 for c in preds if c not in finals)
    if args.json:
        print(json.dumps(s))
        if skipped:
            print(f"{skipped} curve(s) without a final were skipped in the scores",
                  file=sys.stderr)
        return 0
    out = sys.stdout if args.out else sys.stderr
    mae = "n/a (sotl is not in loss units)" if s["mae"] is None else f"{s['mae']:.6g}"
    print(f"n={s['n']} kendall_tau={s['kendall_tau']:.6f} spearman={s['spearman']:.6f} "
          f"mae={mae} (raw predictions)", file=out)
    if skipped:
        print(f"{skipped} curve(s) without a final were skipped in the scores", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
