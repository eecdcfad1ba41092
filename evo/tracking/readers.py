"""Reading runs back (never writing): the learning curves of a search's children or of any
experiment's runs (evo.curves), and earlier searches' fully trained evaluations (evo.warmstart)."""
from __future__ import annotations

import csv
import json
import math
import tempfile

from evo.tracking.store import (TAG_KEY, MlflowClient, MlflowException, TrackingError, _finite, _quiet_downloads,
                                is_final_phase, read_client, resolve_uri)


def fully_trained(run) -> bool:
    """Whether a child run is an evaluation trained to the full budget (its last phase `full` or
    `straight`, see is_final_phase) that neither diverged nor failed, and whose writes finished."""
    tags = run.data.tags
    return (tags.get("dimorph.kind") == "evaluation" and is_final_phase(tags.get("dimorph.phase"))
            and tags.get("dimorph.diverged") != "True" and not tags.get("dimorph.error")
            and run.info.status == "FINISHED")


def _metric_points(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    """A metric's whole history as (step, value), sorted by step; non-finite values and negative
    steps are left out."""
    return sorted((int(m.step), float(m.value)) for m in client.get_metric_history(run_id, key)
                  if _finite(m.value) and m.step >= 0)


def _every_run(client: MlflowClient, experiment_ids: list[str], filter_string: str = "") -> list:
    """Every run matching the filter, all pages, in the order they started."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _number_of(run, key: str | None) -> float | None:
    """A run's param or (latest) metric `key` as a finite number, else None."""
    if not key:
        return None
    for source in (run.data.params, run.data.metrics):
        try:
            x = float(source[key])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(x):
            return x
    return None


def _param_value(text: str):
    """A param as it was logged: a number or JSON value where it parses, else the text."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _experiment_named(client, experiment: str, tracking_uri: str | None):
    """The experiment called `experiment`; TrackingError naming the ones there are when none is."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments(max_results=50))
        raise TrackingError(f"no experiment named {experiment!r} in {resolve_uri(tracking_uri)} "
                            f"(it has {', '.join(map(repr, names)) or 'none'})")
    return exp


# -- the learning curves of runs (evo.curves) ----------------------------------------------------

def search_curves(parent_run_id: str, tracking_uri: str | None = None) -> dict:
    """The learning curves of a Dimorph search's children (read only).

    Returns {"runs": [...], "early_steps", "full_steps", "experiment_id"}; each run is
    {"curve_id": its evaluation key, "run_id", "train": [(step, loss)] of `train/loss`, "val": of
    `val/loss`, "final": `arch/best_val_loss` when the child is fully_trained (else None),
    "n_params": `arch/n_params`, "lr": param `gene/lr`}. The budgets come from the parent's
    `preset.*` params (None when it has none)."""
    client = read_client(tracking_uri, parent_run_id)
    parent = client.get_run(parent_run_id)
    if parent.data.tags.get("mlflow.parentRunId"):
        raise TrackingError(f"run {parent_run_id} is a child run; pass its search's run id "
                            f"{parent.data.tags['mlflow.parentRunId']}")
    children = _every_run(client, [parent.info.experiment_id],
                          f"tags.mlflow.parentRunId = '{parent_run_id}'")
    runs = []
    for run in children:
        tags = run.data.tags
        if tags.get("dimorph.kind") != "evaluation":
            continue
        rid = run.info.run_id
        final = run.data.metrics.get("arch/best_val_loss") if fully_trained(run) else None
        runs.append({"curve_id": tags.get(TAG_KEY) or run.info.run_name or rid, "run_id": rid,
                     "train": _metric_points(client, rid, "train/loss"),
                     "val": _metric_points(client, rid, "val/loss"),
                     "final": float(final) if _finite(final) else None,
                     "n_params": _number_of(run, "arch/n_params"), "lr": _number_of(run, "gene/lr")})
    if not runs:
        raise TrackingError(f"run {parent_run_id} has no evaluation child runs (is it the parent run "
                            f"of a Dimorph search?)")
    steps = {k: _number_of(parent, f"preset.{k}") for k in ("early_steps", "full_steps")}
    return {"runs": runs, "experiment_id": parent.info.experiment_id,
            **{k: int(v) if v is not None else None for k, v in steps.items()}}


def experiment_curves(experiment: str, train_metric: str, val_metric: str | None = None,
                      final_metric: str | None = None, tracking_uri: str | None = None,
                      n_params_key: str | None = None, lr_key: str | None = None) -> list[dict]:
    """The learning curves of every run of an MLflow experiment, under the given metric keys
    (read only). Each run is {"curve_id": run id, "run_id", "run_name", "status", "train", "val"
    (as in search_curves; [] for a missing metric), "final": the latest `final_metric` (None
    without one), "n_params", "lr": the run's param or metric of those keys (None without)}."""
    client = read_client(tracking_uri)
    exp = _experiment_named(client, experiment, tracking_uri)
    out = []
    for run in _every_run(client, [exp.experiment_id]):
        rid = run.info.run_id
        final = run.data.metrics.get(final_metric) if final_metric else None
        out.append({"curve_id": rid, "run_id": rid, "run_name": run.info.run_name,
                    "status": run.info.status,
                    "train": _metric_points(client, rid, train_metric),
                    "val": _metric_points(client, rid, val_metric) if val_metric else [],
                    "final": float(final) if _finite(final) else None,
                    "n_params": _number_of(run, n_params_key), "lr": _number_of(run, lr_key)})
    return out


# -- earlier searches' fully trained evaluations (evo.warmstart) ----------------------------------

def experiment_searches(experiment: str, tracking_uri: str | None = None) -> list[dict]:
    """The Dimorph searches (parent runs) of an experiment, in the order they started (read only).
    Each is {"run_id", "status", "start_time", "preset": its `preset.name` param (else `preset`),
    "full_steps", "early_steps": its `preset.*` params as ints (None without)}."""
    client = read_client(tracking_uri)
    exp = _experiment_named(client, experiment, tracking_uri)
    out = []
    for run in _every_run(client, [exp.experiment_id]):
        if run.data.tags.get("dimorph.kind") != "search" or run.data.tags.get("mlflow.parentRunId"):
            continue
        steps = {k: _number_of(run, f"preset.{k}") for k in ("full_steps", "early_steps")}
        params = run.data.params
        out.append({"run_id": run.info.run_id, "status": run.info.status, "start_time": run.info.start_time,
                    "preset": params.get("preset.name") or params.get("preset"),
                    **{k: int(v) if v is not None else None for k, v in steps.items()}})
    return sorted(out, key=lambda r: (r["start_time"] or 0, r["run_id"]))


def _curves_artifact(client: MlflowClient, run_id: str) -> tuple[list, list] | None:
    """(train, val) points of a child's curves.csv artifact, by step; None without the artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with _quiet_downloads():
                path = client.download_artifacts(run_id, "curves.csv", tmp)
        except (MlflowException, OSError):
            return None
        pts = {"train": [], "val": []}
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("split") in pts:
                    step, loss = int(row["step"]), float(row["loss"])
                    if step >= 0 and math.isfinite(loss):
                        pts[row["split"]].append((step, loss))
    return sorted(pts["train"]), sorted(pts["val"])


def full_evaluations(search_run_id: str, tracking_uri: str | None = None) -> list[dict]:
    """A search's fully_trained evaluations (read only). Each is {"run_id", "key": its evaluation
    key, "start_time", "genes": its gene/* params, "n_params": `arch/n_params`, "train", "val":
    [(step, loss)] from its curves.csv artifact (the whole curve), else from its train/loss and
    val/loss metrics}, in the order they started (ties: run id)."""
    client = read_client(tracking_uri, search_run_id)
    exp_id = client.get_run(search_run_id).info.experiment_id
    out = []
    for run in _every_run(client, [exp_id], f"tags.mlflow.parentRunId = '{search_run_id}'"):
        if not fully_trained(run):
            continue
        rid = run.info.run_id
        curves = _curves_artifact(client, rid) or (_metric_points(client, rid, "train/loss"),
                                                   _metric_points(client, rid, "val/loss"))
        out.append({"run_id": rid, "key": run.data.tags.get(TAG_KEY) or run.info.run_name or rid,
                    "start_time": run.info.start_time,
                    "genes": {k[len("gene/"):]: _param_value(v) for k, v in run.data.params.items()
                              if k.startswith("gene/")},
                    "n_params": _number_of(run, "arch/n_params"), "train": curves[0], "val": curves[1]})
    return sorted(out, key=lambda r: (r["start_time"] or 0, r["run_id"]))
