"""Apply an exported predictor (or a built-in one) to learning curves given as CSV.

python -m evo.predict --curves curves.csv --early-steps 60 --full-steps 600 \
    --formula best_predictor.json [--finals finals.csv] [--meta meta.csv] [--out pred.csv] [--json]

The CSV formats are in README.md ("The CSV format of `evo.predict`"). Bad input exits with 2 and
one line `FILE:LINE: problem`; beyond the README's list, these are refused:
- a loss or final_loss that is not finite or exceeds 1e30 in magnitude (the predictors' range: a
  formula's output is clipped to +-1e30, so a larger loss could not come back unchanged);
- a curve whose train rows all lie before --early-steps (the early budget must fall within the
  curve, else its features would be extrapolated);
- --finals sharing fewer than two curve_ids with --curves (no pair to rank);
- a formula nested deeper than primitives.export.MAX_TREE_DEPTH.
A CSV may start with a UTF-8 byte-order mark.
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
from primitives.pset import BIG

PROG = "python -m evo.predict"
MAX_LOSS = BIG
"""largest loss magnitude accepted: formulas clip their output to [-BIG, BIG]"""
MAX_STEPS = 2 ** 53
"""largest --full-steps: every step below it is exact as a float"""


class InputError(Exception):
    """A problem with the user's input files; reported with exit code 2."""


def _rows(path: str, required: tuple[str, ...]):
    """Yield (line number, row dict) of a CSV file, checking the header has the required columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # a BOM is not a header
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
    except UnicodeDecodeError:
        line, col = _first_non_utf8(path)
        raise InputError(f"{path}:{line}: not UTF-8 text (byte {col + 1} of the line); save the file as "
                         f"UTF-8") from None
    except csv.Error as err:
        raise InputError(f"{path}: not a readable CSV file: {err}") from None


def _first_non_utf8(path) -> tuple[int, int]:
    """(line number, byte offset in it) of the first line that is not UTF-8."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return n, e.start
    return 1, 0


def _number(text: str, what: str, where: str, positive: bool = False, loss: bool = False) -> float:
    """A finite float (optionally > 0; a loss at most MAX_LOSS in magnitude) from a CSV field."""
    try:
        x = float(text)
    except ValueError:
        raise InputError(f"{where}: {what} must be a number, got {text!r}") from None
    if not math.isfinite(x) or (positive and x <= 0):
        kind = "a finite positive number" if positive else "finite"
        raise InputError(f"{where}: {what} must be {kind}, got {text!r}")
    if loss and abs(x) > MAX_LOSS:
        raise InputError(f"{where}: {what} must be finite and at most {MAX_LOSS:g} in magnitude "
                         f"(the predictors' range), got {text!r}")
    return x


def read_curves(path: str, early_steps: int) -> dict[str, dict]:
    """curve_id -> {"train": (steps, losses), "val": (...), "line": first line}; early points.

    Each curve needs two train points with step <= early_steps and must reach early_steps (a train
    row at or past it): features are defined on fractions of the early budget.
    """
    curves: dict[str, dict] = {}
    for line, row in _rows(path, ("curve_id", "step", "split", "loss")):
        where = f"{path}:{line}"
        if not row["curve_id"]:
            raise InputError(f"{where}: empty curve_id")
        if not (row["step"].isascii() and row["step"].isdigit()):
            raise InputError(f"{where}: step must be a non-negative integer, got {row['step']!r}")
        if row["split"] not in ("train", "val", "train_eval"):
            raise InputError(f"{where}: split must be 'train', 'val' or 'train_eval', got {row['split']!r}")
        if row["split"] == "train_eval":  # a table's training loss on fixed windows: not a feature input
            continue
        loss = _number(row["loss"], "loss", where, loss=True)
        c = curves.setdefault(row["curve_id"], {"train": ([], []), "val": ([], []), "line": line,
                                                 "last": (-1, line)})
        step = int(row["step"])
        if row["split"] == "train" and step > c["last"][0]:
            c["last"] = (step, line)
        if step <= early_steps:
            c[row["split"]][0].append(step)
            c[row["split"]][1].append(loss)
    if not curves:
        raise InputError(f"{path}: no data rows")
    for cid, c in curves.items():
        if len(c["train"][0]) < 2:
            raise InputError(f"{path}:{c['line']}: curve {cid!r} has {len(c['train'][0])} train "
                             f"point(s) with step <= {early_steps}; at least two are needed")
        last, line = c.pop("last")
        if last < early_steps:
            raise InputError(f"{path}:{line}: curve {cid!r} ends at train step {last}, before "
                             f"--early-steps {early_steps}; the early budget must lie within "
                             f"every curve")
    return curves


def read_table(path: str, columns: tuple[str, ...],
               positive: bool) -> dict[str, tuple[float, ...]]:
    """curve_id -> finite (optionally positive) numbers of the given columns, one row per id."""
    out: dict[str, tuple[float, ...]] = {}
    for line, row in _rows(path, ("curve_id",) + columns):
        where = f"{path}:{line}"
        if row["curve_id"] in out:
            raise InputError(f"{where}: duplicate curve_id {row['curve_id']!r}")
        out[row["curve_id"]] = tuple(_number(row[c], c, where, positive, loss=c.endswith("loss"))
                                     for c in columns)
    return out


def _finite(value: float, what: str, cid: str, curves_path: str, line: int) -> float:
    """The value, or InputError naming the curve when it overflowed."""
    if not math.isfinite(value):
        raise InputError(f"{curves_path}:{line}: curve {cid!r}: {what} is {value} (its numbers "
                         f"overflow)")
    return value


def warn_budgets(fitted_at: dict | None, args) -> None:
    """A warning on stderr when the formula was fitted at another early fraction E/F than the
    command's (its features are fractions of the early budget)."""
    if not fitted_at:
        return
    frac = args.early_steps / args.full_steps
    if not math.isclose(fitted_at["early_frac"], frac, rel_tol=1e-9):
        print(f"{PROG}: warning: {args.formula} was fitted at early/full "
              f"{fitted_at['early_steps']}/{fitted_at['full_steps']} (fraction "
              f"{fitted_at['early_frac']:.4g}), this command uses {args.early_steps}/"
              f"{args.full_steps} ({frac:.4g}): features are fractions of the early budget, so "
              f"the predictions may be off", file=sys.stderr)


def predict_all(args, curves: dict[str, dict]) -> tuple[dict[str, float], bool, dict | None]:
    """Predictions per curve, whether they are in loss units (MAE meaningful) and the formula
    file's error interval (None for a built-in predictor or a file without one)."""
    if args.predictor:
        func = BASELINES[args.predictor]
        preds = {}
        for cid, c in curves.items():
            with np.errstate(all="ignore"):
                p = func(*c["train"], *c["val"], args.early_steps, args.full_steps)
            preds[cid] = _finite(p, f"the {args.predictor} prediction", cid, args.curves,
                                 c["line"])
        return preds, args.predictor != "sotl", None
    try:
        predictor = load_predictor(args.formula)
    except ValueError as err:
        raise InputError(str(err)) from None
    warn_budgets(predictor.fitted_at, args)
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
        with np.errstate(all="ignore"):
            feats = curve_features(*c["train"], *c["val"], args.early_steps, args.full_steps,
                                   n_params=n_params, lr=lr)
        for name in predictor.features:
            _finite(feats[name], f"feature {name!r}", cid, args.curves, c["line"])
        preds[cid] = predictor(feats)
        if predictor.overflows(feats):
            raise InputError(f"{args.curves}:{c['line']}: the formula overflows on curve {cid!r} (its value is "
                             f"beyond +-{MAX_LOSS:g}); no prediction is written")
    return preds, True, predictor.interval


def scores(preds: dict[str, float], finals: dict[str, tuple[float, ...]], mae_ok: bool) -> dict:
    """Kendall tau-b, Spearman and MAE (None when not in loss units) over curves with a final."""
    ids = [cid for cid in preds if cid in finals]
    if len(ids) < 2:
        raise ValueError(f"{len(ids)} curve(s) have a final; the scores need at least two")
    p = np.array([preds[c] for c in ids])
    t = np.array([finals[c][0] for c in ids])
    mae = float(np.abs(p - t).mean()) if (mae_ok and ids) else None
    return {"n": len(ids), "kendall_tau": kendall_tau(p, t), "spearman": spearman(p, t),
            "mae": mae}


def interval_scores(preds: dict[str, float], finals: dict, interval: dict) -> dict:
    """The file's interval and the share of the finals inside [prediction + lo, prediction + hi]."""
    ids = [c for c in preds if c in finals]
    inside = [preds[c] + interval["lo"] <= finals[c][0] <= preds[c] + interval["hi"] for c in ids]
    return {"level": interval["level"], "lo": interval["lo"], "hi": interval["hi"],
            "coverage": float(np.mean(inside)) if ids else None}


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
    ap.add_argument("--interval", action="store_true",
                    help="add lo,hi columns: the formula file's error interval around each prediction")
    ap.add_argument("--json", action="store_true",
                    help="print only the scores as JSON on stdout (needs --finals)")
    return ap


def parse_args_or_exit_code(ap, argv):
    """The parsed args, or the exit code argparse chose (0 for --help, 2 for a bad flag): the curve
    CLIs' `main` returns codes instead of exiting, so that callers and tests can use them."""
    try:
        return ap.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def check_budget_flags(early_steps: int, full_steps: int) -> None:
    """--early-steps and --full-steps as the curve CLIs take them (InputError naming both)."""
    if not 0 < early_steps <= full_steps <= MAX_STEPS:
        raise InputError(f"need 0 < --early-steps <= --full-steps <= 2**53, got {early_steps} and {full_steps}")


def main(argv=None) -> int:
    """Run the CLI; returns the exit code (2 for bad input)."""
    args = parse_args_or_exit_code(build_parser(), argv)
    if isinstance(args, int):  # --help, or a bad flag (argparse printed why)
        return args
    try:
        check_budget_flags(args.early_steps, args.full_steps)
        if args.json and not args.finals:
            raise InputError("--json needs --finals")
        curves = read_curves(args.curves, args.early_steps)
        finals = read_table(args.finals, ("final_loss",), positive=False) if args.finals else None
        if finals is not None:
            shared = [c for c in curves if c in finals]
            if len(shared) < 2:
                which = f"only curve {shared[0]!r}" if shared else "no curve_id"
                raise InputError(f"{args.finals} and {args.curves} share {which}; the scores "
                                 f"need at least two curves present in both files")
        preds, mae_ok, interval = predict_all(args, curves)
        if args.interval and interval is None:
            raise InputError(f"--interval: {args.formula or args.predictor} has no error interval "
                             f"(evo.fit writes one into predictor.json)")
        s = scores(preds, finals, mae_ok) if finals is not None else None
        if s is not None and interval is not None:
            s["interval"] = interval_scores(preds, finals, interval)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if args.interval:
            writer.writerow(["curve_id", "predicted_final", "lo", "hi"])
            writer.writerows([c, repr(float(p)), repr(float(p + interval["lo"])),
                              repr(float(p + interval["hi"]))] for c, p in preds.items())
        else:
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
    if s is None:
        return 0
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
    if "interval" in s:
        iv = s["interval"]
        print(f"{iv['level']:.0%} interval: prediction {iv['lo']:+.4g} .. {iv['hi']:+.4g}; it holds "
              f"{iv['coverage']:.1%} of these {s['n']} finals", file=out)
    if skipped:
        print(f"{skipped} curve(s) without a final were skipped in the scores", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
