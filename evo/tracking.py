"""MLflow I/O: the only module that imports mlflow. A parent run per search, a child per evaluation."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100  # MLflow's log_batch limits
TAG_KEY = "dimorph.eval_key"


def resolve_uri(tracking_uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else MLflow 3's default sqlite:///mlflow.db here."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _now() -> int:
    return int(time.time() * 1000)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


class Tracker:
    """Writes a search to MLflow with batched calls; every method takes plain values."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = "dimorph"):
        self.uri = resolve_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:"):  # artifacts beside the db, in ./mlruns (MLflow's own layout)
                db = Path(self.uri.split(":///", 1)[-1])
                location = (db.parent / "mlruns").resolve().as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        self.experiment = experiment
        self.run_id: str | None = None

    # -- parent run ---------------------------------------------------------------------------
    def start_search(self, params: dict, run_name: str, run_id: str | None = None, tags: dict | None = None) -> str:
        """Open the parent run (or reopen `run_id` on resume); config goes in as params."""
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name,
                                     tags={"dimorph.kind": "search", **(tags or {})})
        self.run_id = run.info.run_id
        self._batch(self.run_id, params=params)
        return self.run_id

    def log_generation(self, gen: int, row: dict) -> None:
        """Per-generation metrics on the parent, stepped by generation."""
        ts = _now()
        self._batch(self.run_id, metrics=[Metric(k, float(v), ts, gen) for k, v in row.items() if _finite(v)])

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, doc: dict, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, doc, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, summary: dict | None = None, status: str = "FINISHED") -> None:
        """Close the parent run with the final summary as metrics and an artifact."""
        if summary:
            flat = {f"final/{k}": v for k, v in summary.items() if _finite(v)}
            self._batch(self.run_id, metrics=[Metric(k, float(v), _now(), 0) for k, v in flat.items()])
            self.log_dict(summary, "summary.json")
        self.client.set_terminated(self.run_id, status=status)

    # -- child runs ---------------------------------------------------------------------------
    def find_child(self, key: str) -> str | None:
        """The child run of this search already logged for an evaluation key (used on resume)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.run_id}' and tags.`{TAG_KEY}` = '{key}'",
            max_results=1)
        return runs[0].info.run_id if runs else None

    def log_evaluation(self, key: str, result: dict, params: dict, tags: dict, metrics: dict,
                       run_id: str | None = None, after_step: int = -1) -> str:
        """One child run per architecture; a continuation passes the early phase's run_id and
        `after_step` (its early budget) so that only the points after it are logged."""
        if run_id is None:
            run = self.client.create_run(
                self.experiment_id, run_name=key,
                tags={"mlflow.parentRunId": self.run_id, TAG_KEY: key, "dimorph.kind": "evaluation"})
            run_id = run.info.run_id
        ts = _now()
        ms = [Metric(k, float(v), ts, 0) for k, v in metrics.items() if _finite(v)]
        for i, loss in enumerate(result.get("train_losses") or []):
            if i + 1 > after_step and _finite(loss):
                ms.append(Metric("train/loss", float(loss), ts, i + 1))
        for s, v, t in zip(result.get("eval_steps") or [], result.get("val_losses") or [],
                           result.get("train_eval_losses") or []):
            if s > after_step and _finite(v):
                ms.append(Metric("val/loss", float(v), ts, int(s)))
            if s > after_step and _finite(t):
                ms.append(Metric("train/eval_loss", float(t), ts, int(s)))
        self._batch(run_id, metrics=ms, params=params, tags=tags)
        status = "FAILED" if result.get("error") else "FINISHED"
        self.client.set_terminated(run_id, status=status)
        return run_id

    def _batch(self, run_id: str, metrics=(), params: dict | None = None, tags: dict | None = None):
        ps = [Param(str(k), json.dumps(v) if isinstance(v, (dict, list)) else str(v)) for k, v in (params or {}).items()]
        ts = [RunTag(str(k), str(v)) for k, v in (tags or {}).items()]
        metrics = list(metrics)
        while metrics or ps or ts:
            self.client.log_batch(run_id, metrics=metrics[:MAX_METRICS], params=ps[:MAX_PARAMS],
                                  tags=ts[:MAX_TAGS], synchronous=True)
            metrics, ps, ts = metrics[MAX_METRICS:], ps[MAX_PARAMS:], ts[MAX_TAGS:]


def killed_status() -> str:
    return RunStatus.to_string(RunStatus.KILLED)
