"""An Optuna study in MLflow: the study a parent run, each finished trial a child run (evo.objective's
route, `search(..., tracking_uri=...)` or `python -m evo.objective --tracking-uri`).

- The parent is named after the study and tagged `dimorph.kind=search`, `dimorph.route=optuna`; its
  run id is kept in the study's user attribute `mlflow_run_id`, so every process of a shared RDB
  study, and a search started again, logs under the same parent. Its metrics, stepped by trial
  number: `search/best_value` (the best complete value so far) and `search/training_steps` (spent).
- A child per finished trial (`<study>-trial<n>`, tags `dimorph.kind=evaluation`, `optuna.state`,
  `optuna.trial_number`): the configuration as params, every reported point as `val/loss` by step,
  `final/value` for a complete trial and `cost/steps` (the steps it reached); a failed trial's
  error is its `dimorph.error` tag. A trial is logged once: its child carries the trial number, and a
  second call for it (a restart that replays callbacks) finds it and does nothing.
"""
from __future__ import annotations

from evo.tracking.store import (MAX_TAG_VALUE, _now, open_experiment, resolve_uri,  # noqa: F401 (store first)
                                absolute_uri)
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from evo.study_cost import spent_steps, trial_steps, trials_line  # noqa: E402

RUN_ATTR = "mlflow_run_id"


class StudyLogger:
    """Optuna callback `(study, trial)`: logs each finished trial to MLflow (the module docstring)."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = "dimorph-optuna",
                 full_steps: int | None = None):
        """`full_steps`: what a complete trial cost when it does not say (evo.study_cost)."""
        self.uri = absolute_uri(resolve_uri(tracking_uri))
        self.experiment, self.full_steps = experiment, full_steps
        self.client = MlflowClient(self.uri)
        self.experiment_id = open_experiment(self.client, experiment, self.uri)

    def parent(self, study) -> str:
        """The study's parent run id (created once, kept in the study)."""
        run_id = study.user_attrs.get(RUN_ATTR)
        if run_id:
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=study.study_name,
                                     tags={"dimorph.kind": "search", "dimorph.route": "optuna",
                                           "dimorph.study": study.study_name})
        study.set_user_attr(RUN_ATTR, run.info.run_id)
        return run.info.run_id

    def __call__(self, study, trial) -> None:
        from optuna.trial import TrialState

        parent = self.parent(study)
        if self.client.search_runs([self.experiment_id], max_results=1, filter_string=(
                f"tags.`mlflow.parentRunId` = '{parent}' and tags.`optuna.trial_number` = '{trial.number}'")):
            return
        tags = {"mlflow.parentRunId": parent, "dimorph.kind": "evaluation", "optuna.state": trial.state.name,
                "optuna.trial_number": str(trial.number)}
        error = trial.user_attrs.get("error") or trial.system_attrs.get("fail_reason")
        if trial.state == TrialState.FAIL and error:
            tags["dimorph.error"] = str(error)[:MAX_TAG_VALUE]
        child = self.client.create_run(self.experiment_id, run_name=f"{study.study_name}-trial{trial.number}",
                                       tags=tags)
        t = _now()
        metrics = [Metric("val/loss", float(v), t, int(s)) for s, v in sorted(trial.intermediate_values.items())]
        metrics.append(Metric("cost/steps", float(trial_steps(trial, self.full_steps)), t, 0))
        if trial.state == TrialState.COMPLETE:
            metrics.append(Metric("final/value", float(trial.value), t, 0))
        params = [Param(k, str(v)) for k, v in trial.params.items()]
        self.client.log_batch(child.info.run_id, metrics=metrics, params=params)
        self.client.set_terminated(child.info.run_id, "FAILED" if trial.state == TrialState.FAIL else "FINISHED")
        trials = study.get_trials(deepcopy=False)
        best = [x.value for x in trials if x.state == TrialState.COMPLETE]
        parent_metrics = [Metric("search/training_steps", float(spent_steps(study, self.full_steps)), t,
                                 trial.number)]
        if best:
            parent_metrics.append(Metric("search/best_value", float(min(best)), t, trial.number))
        self.client.log_batch(parent, metrics=parent_metrics, tags=[RunTag("dimorph.trials", str(len(trials)))])

    def finish(self, study) -> None:
        """Describe the study on its parent run (the best trial first) and close the run (a later
        search of the same study logs under it again)."""
        from optuna.trial import TrialState

        run_id = study.user_attrs.get(RUN_ATTR)
        if not run_id:
            return
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        lines = []
        if done:
            b = min(done, key=lambda t: t.value)
            params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in b.params.items())
            lines.append(f"**Best value {b.value:.6g}: trial {b.number} ({params}).**")
        lines.append(f"{trials_line(study, self.full_steps)}; each finished trial is a child run.")
        self.client.set_tag(run_id, "mlflow.note.content", "\n\n".join(lines)[:MAX_TAG_VALUE])
        self.client.set_terminated(run_id, "FINISHED")
