"""Warm start: curves trained before a search, as extra archive records for its females.

A search's archive holds tens of fully trained architectures, and a formula's Kendall tau on so few
is noisy (docs/ALGORITHM.md, "Female fitness"). Curves trained earlier with the same budgets (a
table, or earlier searches logged to MLflow) let the females learn from hundreds. `load_warm_start`
turns them into records of the archive's kind (evo.ledger.Evaluation, role "warm"):

- `key`: "warm:<table name>:<arch_id>" or "warm:mlflow:<child run id>", so no search key is shared
  and the females' hash split of the archive (fit / hold-out) stays stable;
- `features`: primitives.features.curve_features of the curve cut at the early budget, computed as
  the engine does for an early phase (with n_params and lr where known, so the architecture features
  exist);
- `target`: the best validation loss over the full budget.

Features at another early budget or full budget are not comparable, so a table built with other
budgets is refused, and MLflow searches with other budgets are left out.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from evo.ledger import Evaluation
from primitives.features import ALL_FEATURES, check_budgets, curve_features

MLFLOW = "mlflow"
DEFAULT_EXPERIMENT = "dimorph"  # evo.config.Config.experiment's default


def early_features(train_steps, train_losses, val_steps, val_losses, early_steps: int, full_steps: int,
                   n_params: float | None = None, lr: float | None = None) -> dict:
    """The engine's features of an early phase: curve_features of the points with step <= early_steps,
    with log n_params and log lr when they are known and positive."""
    def cut(steps, losses):
        pts = [(s, v) for s, v in zip(steps, losses) if s <= early_steps]
        return [s for s, _ in pts], [v for _, v in pts]

    ts, tv = cut(train_steps, train_losses)
    vs, vv = cut(val_steps, val_losses)
    return curve_features(ts, tv, vs, vv, early_steps, full_steps, n_params=_positive(n_params), lr=_positive(lr))


def _positive(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def load_warm_start(spec: str, *, early_steps: int, full_steps: int, features: tuple[str, ...],
                    tracking_uri: str | None = None, experiment: str | None = None,
                    exclude: set[str] | frozenset = frozenset(), preset: str | None = None) -> list[Evaluation]:
    """Fully trained records for a search with these budgets, from `spec`: a table directory, or
    "mlflow" (the evaluations of earlier searches in `experiment` at `tracking_uri`).

    Every record has the `features` a search's females need (a record lacking one, e.g. log_lr
    without a learning rate, is left out). `exclude` leaves out architectures by table arch_id, by
    MLflow run id (a search's or an evaluation's), or by evo.genome.genes_key text. `preset` (MLflow
    only) keeps searches whose preset name is that (their `preset.name` param). Deterministic order:
    the table's rows, or searches then evaluations in the order they started. ValueError, naming the
    bad value, for another table's budgets, a missing directory or experiment, or nothing usable."""
    check_budgets(early_steps, full_steps)
    if early_steps >= full_steps:
        raise ValueError(f"early_steps must be below full_steps={full_steps}, got {early_steps}")
    unknown = [f for f in features if f not in ALL_FEATURES]
    if unknown:
        raise ValueError(f"unknown feature {unknown[0]!r} (known: {', '.join(ALL_FEATURES)})")
    skipped: Counter = Counter()
    if spec == MLFLOW:
        where, recs = _from_mlflow(early_steps, full_steps, tracking_uri, experiment or DEFAULT_EXPERIMENT,
                                   frozenset(exclude), preset, skipped)
    else:
        where, recs = _from_table(spec, early_steps, full_steps, frozenset(exclude), skipped)
    usable = []
    for rec in recs:
        missing = [f for f in features if f not in rec.features]
        if missing:
            skipped[f"no feature {missing[0]!r}"] += 1
        else:
            usable.append(rec)
    if not usable:
        why = "; ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())) or "none found"
        raise ValueError(f"warm start {where}: no usable fully trained curve at full_steps={full_steps}, "
                         f"early_steps={early_steps} (left out: {why})")
    return usable


def _from_table(spec: str, E: int, F: int, exclude: frozenset, skipped: Counter) -> tuple[str, list]:
    from evo.genome import genes_key
    from evo.table import load_table

    d = Path(spec)
    if not d.is_dir():
        raise ValueError(f"warm start {spec!r}: no such directory (give a table directory or {MLFLOW!r})")
    t = load_table(str(d.resolve()))
    for what, have, want in (("full_steps", t.full_steps, F), ("early_steps", t.early_steps, E)):
        if have != want:
            raise ValueError(f"warm start table {d}: its {what} is {have}, the search's is {want}; "
                             f"features at other budgets are not comparable")
    name = t.meta.get("name", d.resolve().name)
    out = []
    for i, (aid, genes) in enumerate(zip(t.ids, t.space().row_genes)):
        if aid in exclude or genes_key(genes) in exclude:
            skipped["excluded"] += 1
            continue
        full, early = t.result(i, F), t.result(i, E)
        if full["diverged"] or early["diverged"] or full["best_val_loss"] is None:
            skipped["diverged"] += 1
            continue
        try:
            feats = early_features(early["train_steps"], early["train_losses"], early["eval_steps"],
                                   early["val_losses"], E, F, n_params=early["n_params"], lr=genes.get("lr"))
        except ValueError:  # a non-finite point before the early budget
            skipped["unusable early curve"] += 1
            continue
        out.append(Evaluation(key=f"warm:{name}:{aid}", genes=dict(genes), role="warm",
                              target=float(full["best_val_loss"]), features=feats))
    return f"table {d}", out


def _from_mlflow(E: int, F: int, tracking_uri: str | None, experiment: str, exclude: frozenset,
                 preset: str | None, skipped: Counter) -> tuple[str, list]:
    from evo import tracking
    from evo.genome import genes_key

    where = f"experiment {experiment!r} in {tracking.resolve_uri(tracking_uri)}"
    searches = tracking.experiment_searches(experiment, tracking_uri)
    chosen = []
    for s in searches:
        if s["run_id"] in exclude:
            skipped["excluded search"] += 1
        elif s["status"] == "RUNNING":  # its archive is its own; its evaluations are still coming
            skipped["running search"] += 1
        elif (s["full_steps"], s["early_steps"]) != (F, E) or (preset is not None and s["preset"] != preset):
            skipped[f"search of preset {s['preset']!r} at full_steps={s['full_steps']}, "
                    f"early_steps={s['early_steps']}"] += 1
        else:
            chosen.append(s)
    out, seen = [], set()
    for s in chosen:
        for ev in tracking.full_evaluations(s["run_id"], tracking_uri):
            gk = genes_key(ev["genes"])
            if ev["run_id"] in exclude or gk in exclude:
                skipped["excluded"] += 1
                continue
            if gk in seen:  # the same architecture twice would put one curve in both fit and hold-out
                skipped["repeated architecture"] += 1
                continue
            train, val = ev["train"], ev["val"]
            reached = max((p[0] for p in train + val), default=0)
            best = min((v for st, v in val if st <= F), default=None)
            if reached < F or best is None:
                skipped["curve ends before the full budget"] += 1
                continue
            try:
                feats = early_features([p[0] for p in train], [p[1] for p in train], [p[0] for p in val],
                                       [p[1] for p in val], E, F, n_params=ev["n_params"], lr=ev["genes"].get("lr"))
            except ValueError:
                skipped["unusable early curve"] += 1
                continue
            seen.add(gk)
            out.append(Evaluation(key=f"warm:mlflow:{ev['run_id']}", genes=ev["genes"], role="warm",
                                  target=float(best), features=feats))
    return where, out


def load_prior(cfg, ckpt, preset_name: str, early_steps: int, full_steps: int, features: tuple[str, ...],
               tracking_uri: str | None) -> list[Evaluation]:
    """A search's --warm-start records, in the order it started with: the journal keeps their keys,
    so a resumed search uses the same. ValueError when a --table search would learn its own table's
    answers, or when curves it started with are gone."""
    from evo.genome import genes_key

    recs = load_warm_start(cfg.warm_start, early_steps=early_steps, full_steps=full_steps, features=features,
                           tracking_uri=tracking_uri or cfg.tracking_uri, experiment=cfg.experiment,
                           preset=preset_name,
                           exclude={ckpt.run_id} if getattr(ckpt, "run_id", None) else frozenset())
    if cfg.table:  # a search by lookup must not learn its own table's answers
        from evo.table import load_table

        rows = {genes_key(g) for g in load_table(cfg.table).space().row_genes}
        shared = [r.key for r in recs if genes_key(r.genes) in rows]
        if shared:
            raise ValueError(f"--warm-start {cfg.warm_start} shares {len(shared)} architectures with --table "
                             f"{cfg.table} (e.g. {shared[0]}): the females would know the answers; split the "
                             f"table first (python -m evo.bench split, docs/TABLES.md)")
    keys = ckpt.once("warm", lambda: [r.key for r in recs])
    by_key = {r.key: r for r in recs}
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise ValueError(f"--warm-start {cfg.warm_start}: {len(missing)} of the {len(keys)} curves this search "
                         f"started with are gone (e.g. {missing[0]}); resume needs the same curves")
    return [by_key[k] for k in keys]

