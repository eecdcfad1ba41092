"""MLflow I/O: the only module that imports mlflow. A parent run per search, a child per evaluation.

Names (README "MLflow"): the parent's metrics are `search/*` (per generation, stepped by generation),
`search/best_val_loss_by_cost` (stepped by cumulative cost, COST_STEP units) and `final/*` (the
result); the children's are `arch/*`, `cost/*`, `perf/*`, `feat/*`, `pred/*`, `train/*`, `val/*`,
so no name is both. Children are named `<short parent id>-<key>` and their `dimorph.parents` tag
holds run ids. The best architecture is logged as a PyTorch model on the parent (`model`).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
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
# The parent's per-generation metrics: the engine's generation row, renamed so that no parent metric
# shares a name with a child's (a key not listed becomes search/<key with / as _>).
PARENT_METRICS = {"arch/best_val_loss": "search/best_val_loss", "archive/size": "search/archive_size",
                  "cost/flops": "search/flops", "cost/seconds": "search/eval_seconds",
                  "cost/full_trainings": "search/full_trainings", "cost/early_trainings": "search/early_trainings",
                  "pred/kendall_tau": "search/champion_tau", "pred/holdout_tau": "search/champion_holdout_tau",
                  "pred/size": "search/champion_size", "div/female_unique": "search/female_unique",
                  "div/male_gene_std": "search/male_gene_std"}
BY_COST = "search/best_val_loss_by_cost"
COST_STEP = 1e9
"""cost per step of BY_COST: one step is 1e9 training FLOPs (MLflow steps are integers)"""
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


def parent_metric(key: str) -> str:
    """The parent run's metric name for a key of the engine's generation row."""
    return PARENT_METRICS.get(key) or "search/" + key.replace("/", "_")


def _train_steps(result: dict) -> list:
    """The step of each training loss: `train_steps` where the result has them, else 1, 2, ..."""
    losses = result.get("train_losses") or []
    return result.get("train_steps") or list(range(1, len(losses) + 1))


def curves_csv(curve_id: str, result: dict) -> str | None:
    """A result's curves in the evo.predict format (curve_id,step,split,loss): its finite training
    and validation losses by step, the same points as its train/loss and val/loss metrics; None
    when it has none (a failed training)."""
    rows = [(int(s), "train", v) for s, v in zip(_train_steps(result), result.get("train_losses") or []) if _finite(v)]
    rows += [(int(s), "val", v) for s, v in zip(result.get("eval_steps") or [], result.get("val_losses") or [])
             if _finite(v)]
    if not rows:
        return None
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["curve_id", "step", "split", "loss"])
    w.writerows([curve_id, step, split, repr(float(loss))] for step, split, loss in rows)
    return buf.getvalue()


def ui_url(tracking_uri: str, experiment_id: str, run_id: str | None = None, view: str | None = None) -> str:
    """The MLflow UI page of a run (or of the experiment's runs, or one of its saved views): on the
    tracking server for an http(s) URI, else on `mlflow ui`'s default address."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    page = f"#/experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    query = "workflowType=machine_learning" + (f"&viewStateShareKey={view}" if view else "")
    return f"{base}/{page}?{query}"


def _leaderboard_view() -> str:
    """The saved-view experiment tag's value (the UI's envelope: name, times, the view state as JSON)."""
    state = {"searchFilter": LEADERBOARD_FILTER, "orderByKey": LEADERBOARD_ORDER, "orderByAsc": True,
             "selectedColumns": LEADERBOARD_COLUMNS, "runsHiddenMode": "SHOW_ALL"}
    return json.dumps({"name": "Dimorph leaderboard", "createdAt": _now(), "state": json.dumps(state)})


@contextmanager
def _global_uri(uri: str):
    """MLflow's model functions use the process-wide tracking URI: set it to ours for the call (and
    keep their download progress bars off the search's output, unless the user asked for them)."""
    old = mlflow.get_tracking_uri()
    bar = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    added = bar not in os.environ
    if added:
        os.environ[bar] = "false"
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old)
        if added:
            os.environ.pop(bar, None)


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
                self._tag_experiment(exp.tags)
        self.experiment = experiment
        self.run_id: str | None = None
        self.cost_step, self.cost_label = COST_STEP, "1e9 training FLOPs"
        self._children: dict[str, str] = {}  # evaluation key -> child run id
        self._reached: dict[str, int] = {}   # child run id -> the step its last phase reached
        self._by_cost: tuple[int, float] | None = None  # the last (step, value) of BY_COST

    def _create_experiment(self, name: str, db: Path | None) -> str:
        location = None
        if db is not None:  # artifacts beside the db, in ./mlruns (MLflow's own layout)
            location = (db.parent / "mlruns").resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location, tags={
                EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, f"mlflow.sharedViewState.{LEADERBOARD_VIEW}": _leaderboard_view()})
        except MlflowException as e:  # another search on the same server created it just now
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise TrackingError(f"cannot create MLflow experiment {name!r} in {self.uri}: {_reason(e)}") from None
            return exp.experiment_id

    def _tag_experiment(self, tags: dict) -> None:
        """Give an experiment created elsewhere (or by an older Dimorph) the kind and the leaderboard
        view it lacks; a kind set by the user is kept."""
        if EXPERIMENT_KIND_TAG not in tags:
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        if f"mlflow.sharedViewState.{LEADERBOARD_VIEW}" not in tags:
            self.client.set_experiment_tag(self.experiment_id, f"mlflow.sharedViewState.{LEADERBOARD_VIEW}",
                                           _leaderboard_view())

    def set_cost_unit(self, step: float, label: str) -> None:
        """The cost of one step of BY_COST (before start_search), e.g. for a table's own cost unit."""
        self.cost_step, self.cost_label = step, label

    # -- parent run ---------------------------------------------------------------------------
    def start_search(self, params: dict, run_name: str, run_id: str | None = None, tags: dict | None = None,
                     reopen: bool = True) -> str:
        """Open the parent run, named `<run_name>-<short run id>`, or on resume reopen `run_id`
        (RUNNING again); with reopen=False (a finished search replayed) the run is left FINISHED, or
        set back to it."""
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags={
                "dimorph.kind": "search", "dimorph.cost_step": self.cost_label,
                "mlflow.note.content": f"Dimorph search `{run_name}`: running.", **(tags or {})})
            self.run_id = run.info.run_id
            self.client.update_run(self.run_id, name=f"{run_name}-{self.short_id}")
            self._batch(self.run_id, params=params)
            return self.run_id
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            raise TrackingError(f"the search's MLflow run {run_id} is not in {self.uri}; resume with the "
                                f"--tracking-uri the search was started with") from None
        self.run_id, self.resumed = run_id, True
        self.experiment_id = run.info.experiment_id  # its children live beside it, whatever --experiment says
        self._children = self._logged_children()
        hist = self.client.get_metric_history(run_id, BY_COST) if BY_COST in run.data.metrics else []
        if hist:
            last = max(hist, key=lambda m: m.step)
            self._by_cost = (last.step, last.value)
        want = "RUNNING" if reopen else "FINISHED"
        if run.info.status != want:
            if reopen:
                self.client.update_run(run_id, status="RUNNING")
            else:
                self.client.set_terminated(run_id, status="FINISHED")
        return run_id

    @property
    def short_id(self) -> str:
        """The parent run id's first 6 characters: the prefix of its children's names."""
        return (self.run_id or "")[:6]

    def _logged_children(self) -> dict[str, str]:
        """Evaluation key -> run id of every child the parent already has."""
        out, token = {}, None
        while True:
            page = self.client.search_runs([self.experiment_id], f"tags.mlflow.parentRunId = '{self.run_id}'",
                                           max_results=1000, page_token=token)
            out.update({r.data.tags[TAG_KEY]: r.info.run_id for r in page if TAG_KEY in r.data.tags})
            token = page.token
            if not token:
                return out

    def log_generation(self, gen: int, row: dict) -> None:
        """Per-generation metrics on the parent, stepped by generation (named by parent_metric), and
        the best val loss so far against the cost used (BY_COST)."""
        ts = _now()
        ms = [Metric(parent_metric(k), float(v), ts, gen) for k, v in row.items() if _finite(v)]
        best, cost = row.get("arch/best_val_loss"), row.get("cost/flops")
        if _finite(best) and _finite(cost):
            step = self._cost_point(float(best), float(cost))
            if step is not None:
                ms.append(Metric(BY_COST, float(best), ts, step))
        self._batch(self.run_id, metrics=ms)

    def _cost_point(self, best: float, cost: float) -> int | None:
        """The step of BY_COST for `best` at cumulative `cost`, or None when there is nothing new.
        Steps only grow: a point that rounds onto the last one's step goes one step later (at most
        one unit of cost off) if it improves on it, and is dropped if it does not."""
        step = int(round(cost / self.cost_step))
        if self._by_cost is not None:
            last_step, last_value = self._by_cost
            if step <= last_step:
                if best >= last_value:
                    return None
                step = last_step + 1
        self._by_cost = (step, best)
        return step

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, doc: dict, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, doc, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict) -> None:
        self._batch(self.run_id, tags=tags)

    def log_dataset(self, path: str | Path, sha256: str, name: str | None = None, context: str = "training") -> None:
        """Record the dataset file as the parent's input (name, digest, source path; the full sha256
        in its profile and in the tag dimorph.data_sha256). Logging it again changes nothing."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        path = Path(path)
        sha = sha256.removeprefix("sha256:")
        size = path.stat().st_size if path.is_file() else None
        ds = Dataset(name=name or path.name, digest=sha[:16], source_type="local",
                     source=json.dumps({"uri": str(path)}),
                     profile=json.dumps({"sha256": sha, "bytes": size}))
        self.client.log_inputs(self.run_id, datasets=[
            DatasetInput(ds, tags=[InputTag("mlflow.data.context", context)])])
        self.set_tags({"dimorph.data_sha256": sha, "dimorph.data_path": str(path)})

    def log_model(self, model, gpt_config: dict, vocab: str, metadata: dict, step: int = 0) -> str:
        """Log a models.gpt.GPT on the parent as an MLflow PyTorch model named `model` (pickled, with
        the GPT's source code so that it loads without Dimorph installed); its GPTConfig and
        vocabulary travel in the MLmodel metadata and as gpt_config.json / vocab.json. Returns its
        models:/ URI, also tagged on the parent as dimorph.model_uri."""
        import logging

        import mlflow.pytorch
        import numpy as np
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        import models.gpt

        meta = {**metadata, "gpt_config": gpt_config, "vocab": vocab}
        with tempfile.TemporaryDirectory() as tmp:
            code = Path(tmp, "code", "models")
            code.mkdir(parents=True)
            shutil.copy(models.gpt.__file__, code / "gpt.py")
            (code / "__init__.py").write_text('"""The GPT of a Dimorph model."""\n')
            extra = [Path(tmp, "gpt_config.json"), Path(tmp, "vocab.json")]
            extra[0].write_text(json.dumps(gpt_config, indent=1))
            extra[1].write_text(json.dumps(vocab))
            signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.int64), (-1, -1), "idx")]))
            logged = self.client.create_logged_model(
                self.experiment_id, name="model", source_run_id=self.run_id, model_type="dimorph-char-gpt",
                params={k: str(v) for k, v in gpt_config.items()})
            quiet = logging.getLogger("mlflow.pytorch")  # its warning about pickles is for foreign models
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                with _global_uri(self.uri):
                    info = mlflow.pytorch.log_model(
                        model, name="model", model_id=logged.model_id, run_id=self.run_id, step=step,
                        serialization_format="pickle", code_paths=[str(code)], extra_files=[str(f) for f in extra],
                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"], metadata=meta,
                        signature=signature)
            finally:
                quiet.setLevel(level)
        self.set_tags({"dimorph.model_uri": info.model_uri})
        return info.model_uri

    def finish(self, summary: dict | None = None, status: str = "FINISHED") -> None:
        """Close the parent run with the final result (final/* metrics, tags naming the best child and
        formula, a description, summary.json). A search that stops (KILLED, FAILED) does not wait
        minutes for a server that may be the reason it stops."""
        if status != "FINISHED":
            with _quick_http(self.uri):
                self.client.set_terminated(self.run_id, status=status)
            return
        if summary:  # stepped by the last generation: an extended search adds its own point
            step = int(summary["gens"]) if _finite(summary.get("gens")) else 0
            flat = {k: v for k, v in final_metrics(summary).items() if _finite(v)}
            self._batch(self.run_id, metrics=[Metric(k, float(v), _now(), step) for k, v in flat.items()],
                        tags={**final_tags(summary), "mlflow.note.content": describe(summary)[:MAX_TAG_VALUE]})
            self.log_dict(summary, "summary.json")
        self.client.set_terminated(self.run_id, status=status)

    # -- child runs ---------------------------------------------------------------------------
    def find_child(self, key: str) -> str | None:
        """The child run of this search already logged for an evaluation key (used on resume)."""
        if key in self._children:
            return self._children[key]
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.run_id}' and tags.`{TAG_KEY}` = '{key}'",
            max_results=1)
        if runs:
            self._children[key] = runs[0].info.run_id
        return runs[0].info.run_id if runs else None

    def log_phase(self, key: str, result: dict, *, phase: str, outcome: bool, genes: dict | None = None,
                  seed: int | None = None, generation: int | None = None, role: str = "", parents=(),
                  features: dict | None = None, early_val: float | None = None, method: str | None = None,
                  run_id: str | None = None, after_step: int = -1, female: str | None = None,
                  female_child: str | None = None) -> str:
        """One trained phase of an evaluation (its child run is created by the first): every child
        metric, param and tag name and every length limit lives here. `outcome`: log the phase's
        best/final losses (a full-budget phase; every rung for the peers); `genes` and `seed` go in
        as params with the first phase; `female`/`female_child` (the mating's female and predictor
        child, as formulas) link the architecture to its lineage's other half."""
        metrics = {"cost/flops": result.get("flops"), "cost/seconds": result.get("eval_seconds"),
                   "arch/n_params": result.get("n_params"), "perf/train_tokens_per_s": result.get("tokens_per_s")}
        if early_val is not None:
            metrics["arch/early_val_loss"] = early_val
        metrics.update({f"feat/{k}": v for k, v in (features or {}).items()})
        if outcome:
            metrics.update({"arch/best_val_loss": result.get("best_val_loss"),
                            "arch/final_val_loss": result.get("final_val_loss"),
                            "arch/final_train_loss": result.get("final_train_loss")})
        params = {} if genes is None else {**{f"gene/{k}": v for k, v in genes.items()}, "seed": seed}
        tags = {"dimorph.role": role, "dimorph.parents": ",".join(parents), "dimorph.phase": phase,
                "dimorph.diverged": bool(result.get("diverged")),
                "dimorph.error": (result.get("error") or "")[:ERROR_CHARS]}
        if generation is not None:
            tags["dimorph.generation"] = generation
        if female is not None:
            tags.update({"dimorph.female": female[:JUDGE_CHARS], "dimorph.female_child": (female_child or "")[:JUDGE_CHARS]})
        if method is not None:
            tags.update({"dimorph.method": method, "dimorph.steps": result.get("steps")})
        return self.log_evaluation(key, result, params, tags, metrics, run_id=run_id, after_step=after_step)

    def log_decision(self, key: str, run_id: str | None, role: str, judge: str | None = None,
                     predicted: float | None = None, score: float | None = None) -> str:
        """A decision about an evaluation (promoted, early-only, pruned@..., and who judged it)."""
        tags = {"dimorph.role": role}
        if judge is not None:
            tags["dimorph.predictor"] = judge[:JUDGE_CHARS]
        metrics = {k: v for k, v in (("pred/predicted_final", predicted), ("pred/score", score)) if v is not None}
        return self.log_evaluation(key, {}, {}, tags, metrics, run_id=run_id)

    def log_evaluation(self, key: str, result: dict, params: dict, tags: dict, metrics: dict,
                       run_id: str | None = None, after_step: int = -1) -> str:
        """One child run per architecture; a continuation passes the early phase's run_id and
        `after_step` (its early budget) so that only the points after it are logged. The scalar
        `metrics` are stepped by the steps the result reached (early budget, then full budget), so
        each phase adds its own point and the run shows the last phase's value; an update without a
        result (a prediction, a role) is stepped by the step the run reached. The run keeps its
        whole curves as curves.csv. `dimorph.parents` keys are written as run ids (the keys stay in
        `dimorph.parent_keys`)."""
        existing = run_id is not None
        if run_id is None:
            run = self.client.create_run(
                self.experiment_id, run_name=f"{self.short_id}-{key}",
                tags={"mlflow.parentRunId": self.run_id, TAG_KEY: key, "dimorph.kind": "evaluation"})
            run_id = run.info.run_id
        self._children[key] = run_id
        tags = dict(tags)
        if "dimorph.parents" in tags:
            keys = [k for k in str(tags["dimorph.parents"] or "").split(",") if k]
            tags["dimorph.parent_keys"] = ",".join(keys)
            tags["dimorph.parents"] = ",".join(filter(None, (self.find_child(k) for k in keys)))
        ts = _now()
        if result:
            at = int(result.get("steps") or max(0, after_step + 1))  # a failed continuation: just past its start
            self._reached[run_id] = at
        else:
            at = self._reached_step(run_id) if existing else 0
        ms = [Metric(k, float(v), ts, at) for k, v in metrics.items() if _finite(v)]
        for s, loss in zip(_train_steps(result), result.get("train_losses") or []):
            if s > after_step and _finite(loss):
                ms.append(Metric("train/loss", float(loss), ts, int(s)))
        for s, v, t in zip(result.get("eval_steps") or [], result.get("val_losses") or [],
                           result.get("train_eval_losses") or []):
            if s > after_step and _finite(v):
                ms.append(Metric("val/loss", float(v), ts, int(s)))
            if s > after_step and _finite(t):
                ms.append(Metric("train/eval_loss", float(t), ts, int(s)))
        self._batch(run_id, metrics=ms, params=params, tags=tags, dedupe=existing and self.resumed)
        curves = curves_csv(key, result)
        if curves is not None:  # the whole curve so far: a continuation's result starts at step 1
            self.client.log_text(run_id, curves, "curves.csv")
        status = "FAILED" if result.get("error") else "FINISHED"
        self.client.set_terminated(run_id, status=status)
        return run_id

    def _reached_step(self, run_id: str) -> int:
        """The step a child's last phase reached (its scalar metrics' latest step)."""
        if run_id not in self._reached:
            run = self.client.get_run(run_id)
            steps = [m.step for m in getattr(run.data, "_metric_objs", [])
                     if not m.key.startswith(("train/", "val/"))]
            self._reached[run_id] = max(steps, default=0)
        return self._reached[run_id]

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


def final_metrics(summary: dict) -> dict:
    """The parent's final/* metrics from a search summary (evo.run's or a peer search's layout)."""
    b, p = summary.get("best") or {}, summary.get("predictor") or {}
    out = {"final/best_val_loss": b.get("best_val_loss"), "final/best_final_val_loss": b.get("final_val_loss"),
           "final/best_final_train_loss": b.get("final_train_loss"), "final/best_n_params": b.get("n_params"),
           "final/best_train_time_s": b.get("train_time_s"),
           "final/inference_tokens_per_s": b.get("inference_tokens_per_s"),
           "final/inference_tokens_per_s_no_cache": b.get("inference_tokens_per_s_no_cache"),
           "final/baseline_best_val_loss": summary.get("baseline_best_val_loss"),
           "final/predictor_fit_tau": p.get("fit_kendall_tau"), "final/predictor_holdout_tau": p.get("holdout_kendall_tau"),
           "final/archive_size": summary.get("archive_size"),
           "final/wall_s": (summary.get("timing") or {}).get("search_wall_s")}
    out.update({f"final/{'eval_seconds' if k == 'seconds' else k}": v for k, v in (summary.get("compute") or {}).items()})
    return out


def final_tags(summary: dict) -> dict:
    """The parent's tags naming the result: the best child (key, run id, genes), the best formula."""
    b, p = summary.get("best") or {}, summary.get("predictor") or {}
    tags = {}
    if b:
        tags.update({"dimorph.best_key": b.get("key"), "dimorph.best_run_id": b.get("run_id") or "",
                     "dimorph.best_genes": json.dumps(b.get("genes"))})
    if p:
        tags.update({"dimorph.best_formula": str(p.get("sympy"))[:MAX_TAG_VALUE],
                     "dimorph.best_formula_tree": str(p.get("tree"))[:MAX_TAG_VALUE]})
    return tags


def describe(summary: dict) -> str:
    """The parent run's description (Markdown): what ran, the best architecture, formula, cost."""
    b, p, c = summary.get("best") or {}, summary.get("predictor"), summary.get("compute") or {}
    n = summary.get("gens")
    gens = f", {n} generation{'' if n == 1 else 's'}" if n is not None else ""
    lines = [f"**Dimorph {summary.get('mode')} search** on preset `{summary.get('preset')}`, seed "
             f"{summary.get('seed')}{gens}.", ""]
    if b:
        genes = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["genes"].items())
        lines.append(f"- Best architecture `{b['key']}` (child run `{b.get('run_id')}`): best val loss "
                     f"**{_num(b.get('best_val_loss'))}** at step {b.get('best_val_step')}, "
                     f"{int(b.get('n_params') or 0):,} parameters; {genes}")
    else:
        lines.append("- No architecture finished training (all diverged or failed).")
    base = summary.get("baseline_best_val_loss")
    if _finite(base) and summary.get("mode") != "baseline":
        lines.append(f"- The preset's baseline architecture, same budget: best val loss {base:.4f}")
    if p:
        lines.append(f"- Best predictor: `{p['sympy']}` (Kendall tau {_num(p.get('fit_kendall_tau'), 3)} on the "
                     f"archive, **{_num(p.get('holdout_kendall_tau'), 3)} held out**)")
    if c:
        runs = (f"{c.get('full_trainings', 0)} full and {c['early_trainings']} early trainings" if "early_trainings" in c
                else f"{c.get('trainings', 0)} trainings, {c.get('full_trainings', 0)} to the full budget")
        lines.append(f"- Cost: {c.get('flops', 0):.3g} training FLOPs; {runs}; {c.get('seconds', 0):.0f} s in evaluations")
    model = (summary.get("mlflow") or {}).get("model_uri")
    if model:
        lines.append(f"- Model: `{model}`; sample it with `python -m evo.sample --run-id "
                     f"{(summary.get('mlflow') or {}).get('run_id')}`")
    elif (summary.get("mlflow") or {}).get("model_note"):
        lines.append(f"- No model logged: {summary['mlflow']['model_note']}")
    return "\n".join(lines) + "\n"


def _num(x, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "n/a"


def load_model(run_id: str, tracking_uri: str | None = None):
    """The model a search logged on its parent run: (GPT in eval mode on the CPU, metadata with
    `vocab` and `gpt_config`). TrackingError when the run or its model is not there."""
    import mlflow.pytorch
    from mlflow.models import Model

    client = read_client(tracking_uri, run_id)
    run = client.get_run(run_id)
    uri = run.data.tags.get("dimorph.model_uri")
    if uri is None:
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent:
            why = f"it is one evaluation of the search run {parent}; pass that run id"
        elif run.data.params.get("table") not in (None, "None"):
            why = "the search ran on a table (--table), where no model exists"
        else:
            why = ("the search has not finished, or its best architecture's trained state was missing; "
                   "pass the run id of a finished search (its summary prints it)")
        raise TrackingError(f"run {run_id} has no logged model: {why}")
    with tempfile.TemporaryDirectory() as tmp, _global_uri(resolve_uri(tracking_uri)):
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        except MlflowException as e:
            raise TrackingError(f"cannot download the model {uri} of run {run_id}: {_reason(e)}") from None
        meta = Model.load(local).metadata or {}
        model = mlflow.pytorch.load_model(local, map_location="cpu")
    return model.eval(), meta


def killed_status() -> str:
    return RunStatus.to_string(RunStatus.KILLED)


# -- reading the learning curves of runs (evo.curves) --------------------------------------------

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


def search_curves(parent_run_id: str, tracking_uri: str | None = None) -> dict:
    """The learning curves of a Dimorph search's children (read only).

    Returns {"runs": [...], "early_steps", "full_steps", "experiment_id"}; each run is
    {"curve_id": its evaluation key, "run_id", "train": [(step, loss)] of `train/loss`, "val": of
    `val/loss`, "final": `arch/best_val_loss` when the child was trained to the full budget without
    diverging or failing (else None), "n_params": `arch/n_params`, "lr": param `gene/lr`}. The
    budgets come from the parent's `preset.*` params (None when it has none)."""
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
        full = (tags.get("dimorph.phase") == "full" and tags.get("dimorph.diverged") != "True"
                and not tags.get("dimorph.error"))
        final = run.data.metrics.get("arch/best_val_loss") if full else None
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


# -- reading earlier searches' fully trained evaluations (evo.warmstart) --------------------------

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
    bar = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"  # one bar per run would bury the caller's output
    added = bar not in os.environ
    if added:
        os.environ[bar] = "false"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "curves.csv", tmp)
        except (MlflowException, OSError):
            return None
        finally:
            if added:
                os.environ.pop(bar, None)
        pts = {"train": [], "val": []}
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("split") in pts:
                    step, loss = int(row["step"]), float(row["loss"])
                    if step >= 0 and math.isfinite(loss):
                        pts[row["split"]].append((step, loss))
    return sorted(pts["train"]), sorted(pts["val"])


def full_evaluations(search_run_id: str, tracking_uri: str | None = None) -> list[dict]:
    """A search's evaluations trained to the full budget without diverging or failing (read only):
    child runs of kind evaluation whose last phase is `full` or `straight`, FINISHED, with no
    `dimorph.error` and `dimorph.diverged` not True. Each is {"run_id", "key": its evaluation key,
    "start_time", "genes": its gene/* params, "n_params": `arch/n_params`, "train", "val": [(step,
    loss)] from its curves.csv artifact (the whole curve), else from its train/loss and val/loss
    metrics}, in the order they started (ties: run id)."""
    client = read_client(tracking_uri, search_run_id)
    exp_id = client.get_run(search_run_id).info.experiment_id
    out = []
    for run in _every_run(client, [exp_id], f"tags.mlflow.parentRunId = '{search_run_id}'"):
        tags = run.data.tags
        if (tags.get("dimorph.kind") != "evaluation" or tags.get("dimorph.phase") not in ("full", "straight")
                or tags.get("dimorph.diverged") == "True" or tags.get("dimorph.error")
                or run.info.status != "FINISHED"):
            continue
        rid = run.info.run_id
        curves = _curves_artifact(client, rid) or (_metric_points(client, rid, "train/loss"),
                                                   _metric_points(client, rid, "val/loss"))
        out.append({"run_id": rid, "key": tags.get(TAG_KEY) or run.info.run_name or rid,
                    "start_time": run.info.start_time,
                    "genes": {k[len("gene/"):]: _param_value(v) for k, v in run.data.params.items()
                              if k.startswith("gene/")},
                    "n_params": _number_of(run, "arch/n_params"), "train": curves[0], "val": curves[1]})
    return sorted(out, key=lambda r: (r["start_time"] or 0, r["run_id"]))
