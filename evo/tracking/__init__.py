"""MLflow I/O: the only package that imports mlflow. A parent run per search, a child per evaluation.

Names (README "MLflow"): the parent's metrics are `search/*` (per generation, stepped by generation),
`search/best_val_loss_by_gflops` (BY_COST: the best so far at each evaluation, a staircase stepped
by cumulative GFLOPs; a table search names its own unit) and `final/*` (the result); the
children's are `arch/*`, `cost/*`, `perf/*`, `pred/*`, `train/*`, `val/*` (their early-curve
features are one artifact, features.json), so no name is both. Children are named `<short parent
id>-<key>`, their `dimorph.parents` tag holds run ids, and their description links their search's
and parents' runs. The best architecture is
logged as a PyTorch model on the parent, named after the search (`dimorph-<mode>-<preset>-seed<seed>`),
its code bundled as the package `dimorph_models`.

Modules: store (the first mlflow import, with telemetry off; URIs, clients, experiments, names and
limits), writer (Tracker), summary (the result as metrics, tags and text), readers (curves and
fully trained evaluations of logged runs), models (the logged model), server (the MLflow UI on a
store for evo.ui: what to open, the server's process), studies (an Optuna study of evo.objective's
route: a parent run, a child per finished trial).
"""
from evo.tracking.store import (  # first: it turns telemetry off before mlflow is imported
    ERROR_CHARS, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, FINAL_PHASES, JUDGE_CHARS,
    LEADERBOARD_COLUMNS, LEADERBOARD_FILTER, LEADERBOARD_ORDER, LEADERBOARD_VIEW, MAX_METRICS, MAX_PARAMS,
    MAX_TAG_VALUE, MAX_TAGS, QUICK_HTTP, SEARCHES_VIEW, TAG_KEY, TrackingError, absolute_uri, add_views, is_final_phase, killed_status,
    open_experiment, read_client, resolve_uri, run_page, sqlite_path, ui_url)
from evo.tracking.summary import (baseline_margin, child_description, describe, final_metrics, final_tags,
                                  summary_lines)
from evo.tracking.models import load_model
from evo.tracking.writer import BY_COST, COST_STEP, PARENT_METRICS, Tracker, curves_csv, parent_metric
from evo.tracking.readers import (experiment_curves, experiment_searches, full_evaluations, fully_trained,
                                  search_curves)

__all__ = [
    "BY_COST", "COST_STEP", "ERROR_CHARS", "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "FINAL_PHASES", "JUDGE_CHARS",
    "LEADERBOARD_COLUMNS", "LEADERBOARD_FILTER", "LEADERBOARD_ORDER", "LEADERBOARD_VIEW", "MAX_METRICS",
    "MAX_PARAMS", "MAX_TAG_VALUE", "MAX_TAGS", "PARENT_METRICS", "QUICK_HTTP", "SEARCHES_VIEW", "TAG_KEY", "Tracker",
    "TrackingError", "absolute_uri", "add_views", "baseline_margin", "child_description", "curves_csv", "describe",
    "experiment_curves", "experiment_searches", "final_metrics", "final_tags", "full_evaluations", "fully_trained",
    "is_final_phase", "killed_status", "load_model", "open_experiment", "parent_metric", "read_client",
    "resolve_uri", "run_page", "search_curves", "sqlite_path", "summary_lines", "ui_url"]
