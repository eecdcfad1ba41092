"""The MLflow store: the first mlflow import (telemetry off before it), the names and limits of what
a search writes, the tracking URI, the store lock, a quick first request, clients and experiments."""
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

from evo.evaluate import FINAL_PHASES, final_phase  # noqa: E402,F401
from mlflow.entities import RunStatus  # noqa: E402
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
MAX_TAG_VALUE = 8000  # MLflow's limit on a tag value
TAG_KEY = "dimorph.eval_key"
ERROR_CHARS, JUDGE_CHARS = 250, 5000  # an error message and a judging formula, as child tags
# MLflow 3's UI opens an experiment of this kind on its runs ("Model training") rather than on the
# GenAI overview. (MLflow 3.17's UI follows its own GenAI / Model training switch instead; a link
# with ?workflowType=machine_learning, as ui_url() writes, opens the runs there too.)
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# A saved view of the runs table (MLflow 3's "Views" menu, an experiment tag): the children as a
# leaderboard, best first. Opened by ui_url(..., view=LEADERBOARD_VIEW).
LEADERBOARD_VIEW = "dimorph-leaderboard"
LEADERBOARD_FILTER = 'tags.dimorph.kind = "evaluation"'
LEADERBOARD_ORDER = "metrics.`arch/best_val_loss`"
LEADERBOARD_COLUMNS = ["metrics.`arch/best_val_loss`", "metrics.`arch/early_val_loss`", "metrics.`pred/predicted_final`",
                       "metrics.`arch/n_params`", "params.`gene/n_layer`", "params.`gene/n_head`", "params.`gene/lr`",
                       "tags.`dimorph.role`"]
# A second saved view: the searches themselves (the parent runs), best result first, with what
# answers "which architecture won, by how much over the baseline, at what cost". evo.ui opens it.
SEARCHES_VIEW = "dimorph-searches"
SEARCHES_FILTER = 'tags.dimorph.kind = "search"'
SEARCHES_ORDER = "metrics.`final/best_val_loss`"
SEARCHES_COLUMNS = ["tags.`dimorph.best_key`", "metrics.`final/best_val_loss`", "metrics.`final/margin_vs_baseline`",
                    "metrics.`final/margin_vs_baseline_pct`", "metrics.`final/flops`", "metrics.`final/full_trainings`",
                    "metrics.`final/predictor_holdout_tau`", "params.`mode`"]
# The first request to a tracking server fails fast (about 20 s at most) instead of MLflow's default
# ~4 minutes of retries; later requests keep MLflow's settings, so a long search outlives a server
# restart. Variables the user set are left alone.
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


class TrackingError(ValueError):
    """The tracking store cannot be reached, or does not hold what the search needs."""


def is_final_phase(phase: str | None) -> bool:
    """Whether a child's `dimorph.phase` is a training to the full budget (evo.evaluate.final_phase)."""
    return final_phase(phase)


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
    except Exception as e:
        database = type(e).__module__.startswith("sqlalchemy")  # a store file that is no database
        if not isinstance(e, (MlflowException, OSError)) and not database:
            raise
        if database:
            why = getattr(getattr(e, "orig", None), "args", [None])[0] or _reason(e)
            raise TrackingError(f"cannot open the MLflow store {uri}: {why}; move the file away (a new store "
                                f"is made) or point --tracking-uri at another one") from None
        if uri.startswith(("http://", "https://")):
            raise TrackingError(
                f"cannot reach the MLflow tracking server {uri}: {_reason(e)}. Start it, or point "
                f"--tracking-uri (or MLFLOW_TRACKING_URI) at a running one") from None
        raise TrackingError(f"cannot open the MLflow store {uri}: {_reason(e)}") from None


@contextmanager
def _quiet_downloads():
    """No artifact download progress bars while inside (one bar per run would bury the caller's
    output), unless the user asked for them."""
    bar = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    added = bar not in os.environ
    if added:
        os.environ[bar] = "false"
    try:
        yield
    finally:
        if added:
            os.environ.pop(bar, None)


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


def run_page(experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's address of a run (or of the experiment's runs) relative to the UI itself,
    `#/experiments/<id>/runs/<run id>`: a link that works in a run's Markdown description on
    whichever server shows it."""
    return f"#/experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")


def ui_url(tracking_uri: str, experiment_id: str, run_id: str | None = None, view: str | None = None) -> str:
    """The MLflow UI page of a run (or of the experiment's runs, or one of its saved views): on the
    tracking server for an http(s) URI, else on `mlflow ui`'s default address."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    page = run_page(experiment_id, run_id)
    query = "workflowType=machine_learning" + (f"&viewStateShareKey={view}" if view else "")
    return f"{base}/{page}?{query}"


def _saved_view(name: str, search_filter: str, order: str, columns: list[str]) -> str:
    """A saved-view experiment tag's value (the UI's envelope: name, times, the view state as JSON)."""
    state = {"searchFilter": search_filter, "orderByKey": order, "orderByAsc": True,
             "selectedColumns": columns, "runsHiddenMode": "SHOW_ALL"}
    return json.dumps({"name": name, "createdAt": _now(), "state": json.dumps(state)})


def _views() -> dict[str, str]:
    """The experiment tags of Dimorph's saved views of the runs table."""
    return {f"mlflow.sharedViewState.{LEADERBOARD_VIEW}": _saved_view(
                "Dimorph leaderboard", LEADERBOARD_FILTER, LEADERBOARD_ORDER, LEADERBOARD_COLUMNS),
            f"mlflow.sharedViewState.{SEARCHES_VIEW}": _saved_view(
                "Dimorph searches", SEARCHES_FILTER, SEARCHES_ORDER, SEARCHES_COLUMNS)}


def add_views(client: MlflowClient, experiment_id: str, tags: dict) -> None:
    """Give an experiment (whose tags are `tags`) the kind and the saved views it lacks (a kind set
    by the user is kept)."""
    missing = {k: v for k, v in {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, **_views()}.items() if k not in tags}
    for k, v in missing.items():
        client.set_experiment_tag(experiment_id, k, v)


def open_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of the experiment called `name`, created with its kind and saved views when the store
    has none (its artifacts beside a sqlite database, in ./mlruns, MLflow's own layout); an existing
    one gets the kind and views it lacks (add_views)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        add_views(client, exp.experiment_id, exp.tags)
        return exp.experiment_id
    db = sqlite_path(uri)
    location = (db.parent / "mlruns").resolve().as_uri() if db is not None else None
    try:
        return client.create_experiment(name, artifact_location=location,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, **_views()})
    except MlflowException as e:  # another search on the same server created it just now
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise TrackingError(f"cannot create MLflow experiment {name!r} in {uri}: {_reason(e)}") from None
        return exp.experiment_id


def killed_status() -> str:
    return RunStatus.to_string(RunStatus.KILLED)
