"""`python -m evo.export`: the best predictors of a search as sympy text, LaTeX and loadable JSON.

From a checkpoint folder (re-scored on its archive) or from an MLflow run id (its logged exports).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _load(path: str):
    """(females re-scored on the checkpoint's archive, the archive, the search's settings)."""
    from evo.checkpoint import read_snapshot
    from evo.females import Females
    from evo.ledger import records_from_rows
    from primitives.features import ARCH_FEATURES

    snap = read_snapshot(path)
    if not snap.get("females"):
        raise ValueError(f"checkpoint {path} holds no predictors (mode {snap['search'].get('mode')!r})")
    fem = Females(arch_features=any(f in ARCH_FEATURES for f in snap["female_features"]))
    if list(fem.features) != snap["female_features"]:
        raise ValueError(f"checkpoint features {snap['female_features']} differ from this version's {list(fem.features)}")
    fem.pop = fem.from_strings(snap["females"])
    archive = records_from_rows([a for a in snap["archive"] if a.get("features") is not None])
    fem.score(fem.pop, archive)
    return fem, archive, snap["search"]


def from_checkpoint(path: str, top: int = 3) -> list[dict]:
    """Re-score the checkpoint's females on its archive and export the best `top`."""
    from primitives.export import export_predictor

    fem, archive, s = _load(path)
    champ = fem.champion()
    ranked = [champ] + [f for f in fem.ranked(fem.pop) if f is not champ][: top - 1]
    early, full = _budgets(s)
    return [export_predictor(ind, fem.pset, meta={
        "rank": i, "fit_kendall_tau": ind.fitness.values[0], "holdout_kendall_tau": ind.holdout_tau,
        "archive_size": len(archive), "preset": s.get("preset"), "seed": s.get("seed"), "source": str(path)},
        early_steps=early, full_steps=full)
        for i, ind in enumerate(ranked)]


def front_from_checkpoint(path: str) -> list[dict]:
    """The checkpoint's accuracy-against-size front (primitives.ensemble.front: Kendall tau on the
    whole archive against tree size), every member exported, smallest first; "default" in a
    member's meta marks the search's champion (the formula the search ranks children with)."""
    from primitives.ensemble import front
    from primitives.export import export_predictor

    fem, archive, s = _load(path)
    champ, (early, full) = str(fem.champion()), _budgets(s)
    return [export_predictor(e["ind"], fem.pset, meta={
        "size": e["size"], "kendall_tau": e["tau"], "fit_kendall_tau": e["fit_tau"],
        "holdout_kendall_tau": e["holdout_tau"], "default": e["tree"] == champ,
        "archive_size": len(archive), "source": str(path)}, early_steps=early, full_steps=full)
        for e in front(fem, archive)]


def _budgets(search: dict) -> tuple[int | None, int | None]:
    """(early_steps, full_steps) of a checkpoint's search (its preset with the overrides, or its
    table); (None, None) when they cannot be resolved here (a table that is not at hand, say)."""
    from dataclasses import fields

    from evo.config import Config
    from evo.space import search_preset

    names = {f.name for f in fields(Config)} - {"data"}
    try:
        space = search_preset(Config(**{k: v for k, v in search.items() if k in names}))
        return int(space.early_steps), int(space.full_steps)
    except (ValueError, TypeError, KeyError, OSError):
        return None, None


def from_run(run_id: str, tracking_uri: str | None = None) -> list[dict]:
    """The predictor exports logged on an MLflow search run."""
    import tempfile

    from evo.tracking import read_client

    client = read_client(tracking_uri, run_id)  # reads only: never creates a database or an experiment
    files = sorted(a.path for a in client.list_artifacts(run_id, "predictors") if a.path.endswith(".json"))
    if not files:
        raise ValueError(f"run {run_id} has no predictor exports (artifact folder 'predictors/')")
    with tempfile.TemporaryDirectory() as tmp:
        return [json.loads(Path(client.download_artifacts(run_id, f, tmp)).read_text()) for f in files]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evo.export", description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a search's --out folder (or its checkpoint.json)")
    src.add_argument("--run-id", help="an MLflow search run id")
    ap.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (with --run-id; default: "
                    "$MLFLOW_TRACKING_URI, else ./mlflow.db, which must exist)")
    ap.add_argument("--top", type=int, default=3, help="how many predictors (default 3)")
    ap.add_argument("--out", default=None, help="folder to write predictor_<i>.json/.txt/.tex into")
    ap.add_argument("--front", action="store_true", help="with --checkpoint: also write the accuracy-"
                    "against-size front, every member, to front.json (and print it)")
    args = ap.parse_args(argv)
    if args.front and not args.checkpoint:
        ap.error("--front needs --checkpoint (an MLflow run keeps only its exported predictors)")
    if args.top < 1:
        ap.error(f"--top must be >= 1, got {args.top}")
    try:
        docs = from_checkpoint(args.checkpoint, args.top) if args.checkpoint else from_run(args.run_id, args.tracking_uri)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for i, doc in enumerate(docs[: args.top]):
        m = doc.get("meta", {})
        print(f"[{i}] tau {m.get('fit_kendall_tau', float('nan')):.3f} (held out "
              f"{m.get('holdout_kendall_tau') if m.get('holdout_kendall_tau') is not None else float('nan'):.3f}), "
              f"features {', '.join(doc['features'])}")
        print(f"    sympy: {doc['sympy']}\n    latex: {doc['latex']}")
        if args.out:
            stem = Path(args.out) / f"predictor_{i}"
            stem.parent.mkdir(parents=True, exist_ok=True)
            stem.with_suffix(".json").write_text(json.dumps(doc, indent=1))
            stem.with_suffix(".txt").write_text(doc["sympy"] + "\n")
            stem.with_suffix(".tex").write_text(doc["latex"] + "\n")
    if args.front:
        front = front_from_checkpoint(args.checkpoint)
        print(f"front ({len(front)} formulas; size, tau on the archive, * = the search's champion):")
        for d in front:
            m = d["meta"]
            print(f"  {m['size']:>3}  {m['kendall_tau']:.3f}{'*' if m['default'] else ' '} {d['sympy']}")
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "front.json").write_text(json.dumps(front, indent=1) + "\n")
    if args.out:
        print(f"written to {args.out}/predictor_<i>.json (load with evo.predict --formula)"
              + (", front.json" if args.front else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
