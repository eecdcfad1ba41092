"""`python -m evo.compare A B`: did two searches make the same decisions?

Compares two output folders (`--out` of evo.run): their settings, then every decision a search
records in its checkpoint (the archive of fully trained architectures with their targets, the
lineage, the males and females, the best architecture, compute in FLOPs and the history), leaving
out what is measured rather than decided (seconds, run ids, state files). Prints "identical", or
the first difference and the environments the two ran in (evo.machine). Exit 0 when identical, 1
when not, 2 for a folder that is not a search.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evo.checkpoint import CheckpointError, read_snapshot
from evo.machine import differences

DECISIONS = ("archive", "lineage", "males", "females", "best", "compute", "history", "records")


def decisions(doc: dict) -> dict:
    """What a checkpoint holds that the seed and the code decide (no timings, ids or paths)."""
    out = {k: doc[k] for k in DECISIONS if k in doc}
    if isinstance(out.get("compute"), dict):
        out["compute"] = {k: v for k, v in out["compute"].items() if k != "seconds"}
    if isinstance(out.get("best"), dict):
        out["best"] = {k: v for k, v in out["best"].items() if k not in ("run_id", "state")}
    return out


def first_difference(a, b, where: str = "") -> str | None:
    """The path of the first place where two JSON values differ, with both values; None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{where}.{k}: only in {'B' if k not in a else 'A'}"
            d = first_difference(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{where}[{i}]")
            if d:
                return d
        return None if len(a) == len(b) else f"{where}: {len(a)} items in A, {len(b)} in B"
    return None if a == b else f"{where}: {json.dumps(a, default=str)[:120]} in A, {json.dumps(b, default=str)[:120]} in B"


def _environment(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "summary.json").read_text()).get("environment")
    except (OSError, ValueError):
        return None


def compare(a: str, b: str) -> tuple[bool, str]:
    """(identical, the report's text)."""
    da, db = read_snapshot(a), read_snapshot(b)
    lines = []
    settings = first_difference(da.get("search"), db.get("search"), "search")
    if settings:
        lines.append(f"different searches: {settings}")
    diff = first_difference(decisions(da), decisions(db))
    same = diff is None and settings is None
    lines.append("identical decisions" if diff is None else f"first different decision: {diff.lstrip('.')}")
    env = differences(_environment(Path(a)), _environment(Path(b)))
    if env:
        lines.append("environments differ: " + "; ".join(f"{k}: {x!r} vs {y!r}" for k, x, y in
                                                        ((k, *v) for k, v in env.items())))
    elif not same:
        lines.append("same environment: the code or its inputs differ")
    return same, "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evo.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="a search's --out folder")
    ap.add_argument("b", help="another search's --out folder")
    args = ap.parse_args(argv)
    try:
        same, text = compare(args.a, args.b)
    except CheckpointError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
