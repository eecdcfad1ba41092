"""Writing a search to MLflow: the Tracker, with its parent run (per-generation metrics, the
cost-stepped best, the final result, the model) and a child run per evaluation (each trained phase,
each decision about it)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag

from evo.tracking.models import log_gpt_model
from evo.tracking.store import (ERROR_CHARS, JUDGE_CHARS, MAX_METRICS, MAX_PARAMS, MAX_TAG_VALUE, MAX_TAGS, TAG_KEY,
                                MlflowClient, MlflowException, TrackingError, _connecting, _finite, _now,
                                _quick_http, _store_lock, open_experiment, resolve_uri, sqlite_path)
from evo.tracking.summary import child_description, describe, final_metrics, final_tags

# The parent's per-generation metrics: the engine's generation row, renamed so that no parent metric
# shares a name with a child's (a key not listed becomes search/<key with / as _>).
PARENT_METRICS = {"arch/best_val_loss": "search/best_val_loss", "archive/size": "search/archive_size",
                  "cost/flops": "search/flops", "cost/seconds": "search/eval_seconds",
                  "cost/full_trainings": "search/full_trainings", "cost/early_trainings": "search/early_trainings",
                  "pred/kendall_tau": "search/champion_tau", "pred/holdout_tau": "search/champion_holdout_tau",
                  "pred/size": "search/champion_size", "div/female_unique": "search/female_unique",
                  "div/male_gene_std": "search/male_gene_std"}
# The final metrics that describe the logged model (shown on it, with the dataset they were measured on).
MODEL_METRICS = ("final/best_val_loss", "final/best_final_val_loss", "final/best_final_train_loss",
                 "final/margin_vs_baseline", "final/margin_vs_baseline_pct")
BY_COST = "search/best_val_loss_by_gflops"
COST_STEP = 1e9
"""cost per step of BY_COST: one step is 1e9 training FLOPs (MLflow steps are integers), the unit in
its name; a table search names its own unit (Tracker.set_cost_unit)"""


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
            self.experiment_id = open_experiment(self.client, experiment, self.uri)
        self.experiment = experiment
        self.run_id: str | None = None
        self.run_name: str | None = None  # the parent run's name, as its children's descriptions link it
        self.cost_step, self.cost_label, self.by_cost = COST_STEP, "1e9 training FLOPs", BY_COST
        self._children: dict[str, str] = {}  # evaluation key -> child run id
        self._reached: dict[str, int] = {}   # child run id -> the step its last phase reached
        self._dataset: dict = {}  # the dataset logged as the parent's input (name, digest)
        self._model: dict = {}  # the logged model and its dataset, which the model's final metrics name

    def set_cost_unit(self, step: float, label: str, name: str) -> None:
        """The cost of one step of the best-so-far staircase and its metric's name (before
        start_search), e.g. for a table's own cost unit."""
        self.cost_step, self.cost_label, self.by_cost = step, label, name

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
            self.run_name = f"{run_name}-{self.short_id}"
            self.client.update_run(self.run_id, name=self.run_name)
            self._batch(self.run_id, params=params)
            return self.run_id
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            raise TrackingError(f"the search's MLflow run {run_id} is not in {self.uri}; resume with the "
                                f"--tracking-uri the search was started with") from None
        if run.info.lifecycle_stage == "deleted":
            raise TrackingError(f"the search's MLflow run {run_id} was deleted from {self.uri}; restore it "
                                f"(mlflow runs restore --run-id {run_id}, with MLFLOW_TRACKING_URI={self.uri}) "
                                f"and resume, or start the search again in a new --out")
        self.run_id, self.resumed, self.run_name = run_id, True, run.info.run_name
        self.experiment_id = run.info.experiment_id  # its children live beside it, whatever --experiment says
        self._children = self._logged_children()
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
        """Per-generation metrics on the parent, stepped by generation (named by parent_metric)."""
        ts = _now()
        self._batch(self.run_id, metrics=[Metric(parent_metric(k), float(v), ts, gen) for k, v in row.items()
                                          if _finite(v)])

    def log_best_so_far(self, points: list) -> None:
        """Points (step, best so far) of the staircase of the best val loss against cumulative cost
        (evo.ledger.staircase), as the metric `by_cost` (BY_COST: stepped by GFLOPs)."""
        ts = _now()
        self._batch(self.run_id, metrics=[Metric(self.by_cost, float(v), ts, int(s)) for s, v in points])

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
        self._dataset = {"dataset_name": ds.name, "dataset_digest": ds.digest}
        self.client.log_inputs(self.run_id, datasets=[
            DatasetInput(ds, tags=[InputTag("mlflow.data.context", context)])])
        self.set_tags({"dimorph.data_sha256": sha, "dimorph.data_path": str(path)})

    def log_model(self, model, gpt_config: dict, vocab: str, metadata: dict, step: int = 0,
                  name: str = "model") -> str:
        """Log a models.gpt.GPT on the parent as an MLflow PyTorch model called `name` (see
        models.log_gpt_model: loadable without Dimorph, GPTConfig and vocabulary with it). Returns its
        models:/ URI, also tagged on the parent as dimorph.model_uri (and the name as dimorph.model_name)."""
        uri = log_gpt_model(self.client, self.uri, self.experiment_id, self.run_id, model, gpt_config, vocab,
                            metadata, step, name=name)
        self.set_tags({"dimorph.model_uri": uri, "dimorph.model_name": name})
        if uri.startswith("models:/"):  # its description; its final metrics (finish) name it and the dataset
            self._model = {"model_id": uri[len("models:/"):], **self._dataset}
            loss = metadata.get("best_val_loss")
            self.client.set_logged_model_tags(self._model["model_id"], {"mlflow.note.content": (
                f"The best architecture of the Dimorph search `{self.run_name}` (evaluation "
                f"`{metadata.get('key')}`), trained {metadata.get('steps')} steps; best val loss "
                f"{f'{loss:.4f}' if _finite(loss) else 'n/a'}. Load: mlflow.pytorch.load_model('{uri}').")})
        return uri

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
            self._batch(self.run_id, metrics=[Metric(k, float(v), _now(), step, **(self._model if k in MODEL_METRICS else {}))
                                              for k, v in flat.items()],
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
        child, as formulas) link the architecture to its lineage's other half. The first phase
        (the one with `genes`) writes the child's description (summary.child_description)."""
        metrics = {"cost/flops": result.get("flops"), "cost/seconds": result.get("eval_seconds"),
                   "arch/n_params": result.get("n_params"), "perf/train_tokens_per_s": result.get("tokens_per_s")}
        if early_val is not None:
            metrics["arch/early_val_loss"] = early_val
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
        lineage = None if genes is None else {"generation": generation, "method": method, "female": female,
                                               "female_child": female_child}
        run_id = self.log_evaluation(key, result, params, tags, metrics, run_id=run_id, after_step=after_step,
                                     lineage=lineage)
        if features:  # the early curve's features (the females' inputs): one artifact, not a metric each
            self.client.log_dict(run_id, {k: (float(v) if _finite(v) else None) for k, v in features.items()},
                                 "features.json")
        return run_id

    def log_decision(self, key: str, run_id: str | None, role: str, judge: str | None = None,
                     predicted: float | None = None, score: float | None = None) -> str:
        """A decision about an evaluation (promoted, early-only, pruned@..., and who judged it)."""
        tags = {"dimorph.role": role}
        if judge is not None:
            tags["dimorph.predictor"] = judge[:JUDGE_CHARS]
        metrics = {k: v for k, v in (("pred/predicted_final", predicted), ("pred/score", score)) if v is not None}
        return self.log_evaluation(key, {}, {}, tags, metrics, run_id=run_id)

    def log_evaluation(self, key: str, result: dict, params: dict, tags: dict, metrics: dict,
                       run_id: str | None = None, after_step: int = -1, lineage: dict | None = None) -> str:
        """One child run per architecture; a continuation passes the early phase's run_id and
        `after_step` (its early budget) so that only the points after it are logged. The scalar
        `metrics` are stepped by the steps the result reached (early budget, then full budget), so
        each phase adds its own point and the run shows the last phase's value; an update without a
        result (a prediction, a role) is stepped by the step the run reached. The run keeps its
        whole curves as curves.csv. `dimorph.parents` keys are written as run ids (the keys stay in
        `dimorph.parent_keys`); with `lineage` (generation, method, female, female_child) the run's
        description names its search and parents as links, and the formulas in full (a description
        over MLflow's tag limit is cut there, the whole of it kept as description.md)."""
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
            ids = [self.find_child(k) for k in keys]
            tags["dimorph.parents"] = ",".join(filter(None, ids))
            if lineage is not None:
                note = child_description(key, self.experiment_id, self.run_id, self.run_name, list(zip(keys, ids)),
                                         **lineage)
                if len(note) > MAX_TAG_VALUE:
                    self.client.log_text(run_id, note, "description.md")
                    note = note[:MAX_TAG_VALUE - 100] + "\n\n(cut here: the whole description is description.md)\n"
                tags["mlflow.note.content"] = note
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

