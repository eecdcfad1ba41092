"""MLflow I/O: the only module that imports mlflow. A parent run per search, a child per evaluation."""
from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path

# MLflow 3 sends usage telemetry unless told not to; Dimorph keeps it off unless the user opts in
# (MLFLOW_DISABLE_TELEMETRY=false). Set before mlflow is imported: it decides at import time.
_MLFLOW_IMPORTED = "mlflow" in sys.modules
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param, RunStatus, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

if _MLFLOW_IMPORTED:  # imported before us: drop the client it may have started
    try:
        from mlflow.telemetry import set_telemetry_client
        set_telemetry_client()
    except Exception:  # telemetry is never worth a failed search
        pass

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None

MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100  # MLflow's log_batch limits
TAG_KEY = "dimorph.eval_key"
# The first request to a tracking server fails fast (about 20 s at most) instead of MLflow's default
# ~4 minutes of retries; later requests keep MLflow's settings, so a long search outlives a server
# restart. Variables the user set are left alone.
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


class TrackingError(ValueError):
    """The tracking store cannot be reached, or does not hold what the search needs."""


def resolve_uri(tracking_uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else MLflow 3's default sqlite:///mlflow.db here;
    a relative sqlite path or plain folder is made absolute, so the URI means the same from anywhere."""
    return absolute_uri(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db")


def absolute_uri(uri: str) -> str:
    """The URI with a relative sqlite database path (or a plain folder path) resolved against the cwd."""
    if uri.startswith("sqlite:///"):
        path, sep, query = uri[len("sqlite:///"):].partition("?")
        if path and path != ":memory:" and not os.path.isabs(path):
            return f"sqlite:///{Path(path).resolve()}{sep}{query}"
        return uri
    if "://" not in uri and not uri.startswith(("file:", "databricks")):
        return str(Path(uri).resolve())
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (None for other stores and in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].partition("?")[0]
    return Path(path) if path and path != ":memory:" else None


@contextmanager
def _store_lock(uri: str):
    """Hold an exclusive lock on `<db>.lock` beside a sqlite database, so that searches started at
    once create and migrate it one after the other (MLflow's migrations are not safe to race)."""
    db = sqlite_path(uri)
    if db is None or fcntl is None:
        yield
        return
    lock = db.with_name(db.name + ".lock")
    try:
        fh = open(lock, "a")
    except OSError as e:
        raise TrackingError(f"cannot use the MLflow database {db}: cannot create {lock} "
                            f"({e.strerror or e}); pass another --tracking-uri") from None
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


@contextmanager
def _quick_http(uri: str):
    """Few retries and a short timeout for the first request to a server (unless the user set them)."""
    if not uri.startswith(("http://", "https://")):
        yield
        return
    added = {k: v for k, v in QUICK_HTTP.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _reason(e: BaseException) -> str:
    """The one informative part of an MLflow/requests error (connection refused, timed out, ...)."""
    text = str(e)
    m = re.search(r"\[Errno -?\d+\] ([^\"'()\]]+)", text) or re.search(r"(Read timed out|timed out)", text)
    if m:
        return m.group(1).strip().rstrip(".")
    return text.strip().splitlines()[0][:300] if text.strip() else type(e).__name__


@contextmanager
def _connecting(uri: str):
    """Turn a failure to reach the store into one clear TrackingError."""
    try:
        yield
    except (MlflowException, OSError) as e:
        if uri.startswith(("http://", "https://")):
            raise TrackingError(
                f"cannot reach the MLflow tracking server {uri}: {_reason(e)}. Start it, or point "
                f"--tracking-uri (or MLFLOW_TRACKING_URI) at a running one") from None
        raise TrackingError(f"cannot open the MLflow store {uri}: {_reason(e)}") from None


def _now() -> int:
    return int(time.time() * 1000)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def read_client(tracking_uri: str | None = None, run_id: str | None = None) -> MlflowClient:
    """A client for reading an existing store (and run): never creates a database or an experiment."""
    uri = resolve_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise TrackingError(f"no MLflow database at {db} (tracking URI {uri}); run this from the folder "
                            f"the search ran in, or pass its --tracking-uri")
    client = MlflowClient(tracking_uri=uri)
    with _quick_http(uri), _connecting(uri):
        client.search_experiments(max_results=1)
    if run_id is not None:
        try:
            client.get_run(run_id)
        except MlflowException as e:
            raise TrackingError(f"run {run_id} is not in {uri}: {_reason(e)}") from None
    return client


class Tracker:
    """Writes a search to MLflow with batched calls; every method takes plain values.

    `create=False` refuses to create a new sqlite database (a resume whose run must already exist).
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = "dimorph", create: bool = True):
        self.uri = resolve_uri(tracking_uri)
        db = sqlite_path(self.uri)
        if not create and db is not None and not db.is_file():
            raise TrackingError(f"no MLflow database at {db} (tracking URI {self.uri}); pass the "
                                f"--tracking-uri the search was started with")
        self.resumed = False  # set by start_search on a reopened run: writes then skip points already logged
        with _store_lock(self.uri), _quick_http(self.uri), _connecting(self.uri):
            self.client = MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                self.experiment_id = self._create_experiment(experiment, db)
            else:
                self.experiment_id = exp.experiment_id
        self.experiment = experiment
        self.run_id: str | None = None

    def _create_experiment(self, name: str, db: Path | None) -> str:
        location = None
        if db is not None:  # artifacts beside the db, in ./mlruns (MLflow's own layout)
            location = (db.parent / "mlruns").resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException as e:  # another search on the same server created it just now
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise TrackingError(f"cannot create MLflow experiment {name!r} in {self.uri}: {_reason(e)}") from None
            return exp.experiment_id

    # -- parent run ---------------------------------------------------------------------------
    def start_search(self, params: dict, run_name: str, run_id: str | None = None, tags: dict | None = None,
                     reopen: bool = True) -> str:
        """Open the parent run, or on resume reopen `run_id` (RUNNING again); with reopen=False (a
        finished search replayed) the run is left FINISHED, or set back to it."""
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=run_name,
                                         tags={"dimorph.kind": "search", **(tags or {})})
            self.run_id = run.info.run_id
            self._batch(self.run_id, params=params)
            return self.run_id
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            raise TrackingError(f"the search's MLflow run {run_id} is not in {self.uri}; resume with the "
                                f"--tracking-uri the search was started with") from None
        self.run_id, self.resumed = run_id, True
        self.experiment_id = run.info.experiment_id  # its children live beside it, whatever --experiment says
        want = "RUNNING" if reopen else "FINISHED"
        if run.info.status != want:
            if reopen:
                self.client.update_run(run_id, status="RUNNING")
            else:
                self.client.set_terminated(run_id, status="FINISHED")
        return run_id

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

    def set_tags(self, tags: dict) -> None:
        self._batch(self.run_id, tags=tags)

    def finish(self, summary: dict | None = None, status: str = "FINISHED") -> None:
        """Close the parent run with the final summary as metrics and an artifact. A search that
        stops (KILLED, FAILED) does not wait minutes for a server that may be the reason it stops."""
        if status != "FINISHED":
            with _quick_http(self.uri):
                self.client.set_terminated(self.run_id, status=status)
            return
        if summary:  # stepped by the last generation: an extended search adds its own point
            flat = {f"final/{k}": v for k, v in summary.items() if _finite(v)}
            step = int(summary["gens"]) if _finite(summary.get("gens")) else 0
            self._batch(self.run_id, metrics=[Metric(k, float(v), _now(), step) for k, v in flat.items()])
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
        `after_step` (its early budget) so that only the points after it are logged. The scalar
        `metrics` are stepped by the steps the result reached (early budget, then full budget), so
        each phase adds its own point and the run shows the last phase's value."""
        existing = run_id is not None
        if run_id is None:
            run = self.client.create_run(
                self.experiment_id, run_name=key,
                tags={"mlflow.parentRunId": self.run_id, TAG_KEY: key, "dimorph.kind": "evaluation"})
            run_id = run.info.run_id
        ts = _now()
        at = int(result.get("steps") or max(0, after_step + 1))  # a failed continuation: just past its start
        ms = [Metric(k, float(v), ts, at) for k, v in metrics.items() if _finite(v)]
        for i, loss in enumerate(result.get("train_losses") or []):
            if i + 1 > after_step and _finite(loss):
                ms.append(Metric("train/loss", float(loss), ts, i + 1))
        for s, v, t in zip(result.get("eval_steps") or [], result.get("val_losses") or [],
                           result.get("train_eval_losses") or []):
            if s > after_step and _finite(v):
                ms.append(Metric("val/loss", float(v), ts, int(s)))
            if s > after_step and _finite(t):
                ms.append(Metric("train/eval_loss", float(t), ts, int(s)))
        self._batch(run_id, metrics=ms, params=params, tags=tags, dedupe=existing and self.resumed)
        status = "FAILED" if result.get("error") else "FINISHED"
        self.client.set_terminated(run_id, status=status)
        return run_id

    def _unlogged(self, run_id: str, metrics: list) -> list:
        """The points of `metrics` whose (key, step) the run does not hold yet: a write repeated on
        resume (the process was killed after MLflow took it but before the journal recorded it)
        adds nothing."""
        if not metrics:
            return metrics
        logged = self.client.get_run(run_id).data.metrics  # keys never logged need no history query
        have = set()
        for key in {m.key for m in metrics if m.key in logged}:
            have |= {(key, h.step) for h in self.client.get_metric_history(run_id, key)}
        return [m for m in metrics if (m.key, m.step) not in have]

    def _batch(self, run_id: str, metrics=(), params: dict | None = None, tags: dict | None = None,
               dedupe: bool | None = None):
        ps = [Param(str(k), json.dumps(v) if isinstance(v, (dict, list)) else str(v)) for k, v in (params or {}).items()]
        ts = [RunTag(str(k), str(v)) for k, v in (tags or {}).items()]
        metrics = list(metrics)
        if self.resumed if dedupe is None else dedupe:
            metrics = self._unlogged(run_id, metrics)
        while metrics or ps or ts:
            self.client.log_batch(run_id, metrics=metrics[:MAX_METRICS], params=ps[:MAX_PARAMS],
                                  tags=ts[:MAX_TAGS], synchronous=True)
            metrics, ps, ts = metrics[MAX_METRICS:], ps[MAX_PARAMS:], ts[MAX_TAGS:]


def killed_status() -> str:
    return RunStatus.to_string(RunStatus.KILLED)
