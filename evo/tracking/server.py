"""The MLflow UI on a search's store, for `python -m evo.ui`: what to open (the experiment and the page
that answers "which architecture won, by how much, at what cost") and the server's process.

MLflow 3.17's UI, as read from its bundled code: an experiment page opens on the GenAI side unless
the link carries `?workflowType=machine_learning` (the "Model training" side); a runs table takes
a saved view from `viewStateShareKey=<view>`. The assistant panel opens by itself once per browser
profile on a first visit from a local host name (localhost, 127.0.0.1, ::1): no server option or
environment variable turns it off (MLFLOW_ENABLE_REMOTE_ASSISTANT only widens who may use it);
closing it is remembered by the browser (localStorage `mlflow.assistant.panelOpen_v1` and
`mlflow.assistant.fab.autoOpenedOnFirstLoad_v1`). The "Detect issues" popover belongs to the
GenAI traces pages, which a machine_learning link never shows.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from evo.tracking.store import (LEADERBOARD_VIEW, SEARCHES_VIEW, MlflowException, TrackingError, add_views,
                                read_client, run_page, sqlite_path)


def landing(uri: str, experiment: str | None = None, run_id: str | None = None) -> dict:
    """What to open in a store: {"experiment_id", "experiment", "searches" (how many parent runs),
    "run_id" (the given search, else the best finished one), "page" (the searches view)}. Raises
    TrackingError when the store, the experiment or its searches are missing. Gives the experiment
    the saved views it lacks (a store written by an older Dimorph)."""
    client = read_client(uri)
    if run_id is not None:
        try:
            exp = client.get_experiment(client.get_run(run_id).info.experiment_id)
        except MlflowException:
            raise TrackingError(f"the search's run {run_id} is not in {uri}: pass the --tracking-uri it used") from None
    elif experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = [e.name for e in client.search_experiments(max_results=20)]
            raise TrackingError(f"no experiment {experiment!r} in {uri} (it has: {', '.join(names) or 'none'}); "
                                f"pass --experiment")
    else:
        raise TrackingError("name an experiment (--experiment) or a search (--out)")
    runs = client.search_runs([exp.experiment_id], 'tags.dimorph.kind = "search"', max_results=1000,
                              order_by=["metrics.`final/best_val_loss` ASC"])
    if not runs:
        raise TrackingError(f"the MLflow store {uri} has no Dimorph search in experiment {exp.name!r}: "
                            f"run one first (python -m evo.run), or pass the --tracking-uri it used")
    add_views(client, exp.experiment_id, exp.tags)
    return {"experiment_id": exp.experiment_id, "experiment": exp.name, "searches": len(runs),
            "run_id": run_id or runs[0].info.run_id,
            "page": f"{run_page(exp.experiment_id)}?workflowType=machine_learning&viewStateShareKey={SEARCHES_VIEW}"}


def links(base: str, where: dict) -> dict:
    """The UI's addresses on the server at `base`: the searches (the answer), the search's parent
    run and the leaderboard of every architecture."""
    ml = "workflowType=machine_learning"
    return {"searches": f"{base}/{where['page']}",
            "search": f"{base}/{run_page(where['experiment_id'], where['run_id'])}?{ml}",
            "leaderboard": f"{base}/{run_page(where['experiment_id'])}?{ml}&viewStateShareKey={LEADERBOARD_VIEW}"}


def port_taken(host: str, port: int) -> bool:
    """Whether something listens on host:port already."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start(uri: str, host: str, port: int, log: Path) -> subprocess.Popen:
    """`mlflow server` on the store at host:port (one worker; new artifacts beside a sqlite
    database, in its ./mlruns), in its own process group, its output in `log`."""
    if port_taken(host, port):
        raise TrackingError(f"port {port} on {host} is taken (another MLflow UI?): pass --port, e.g. --port {port + 1}")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
           "--port", str(port), "--workers", "1"]
    db = sqlite_path(uri)
    if db is not None:
        cmd += ["--default-artifact-root", (db.parent / "mlruns").resolve().as_uri()]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true")}
    with open(log, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_until_up(proc: subprocess.Popen, base: str, log: Path, timeout: float = 120.0) -> None:
    """Return once the server answers /health; TrackingError (with the end of its log) if it exits
    or stays silent for `timeout` seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.is_file() else ""
            raise TrackingError(f"mlflow server exited with status {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    stop(proc)
    raise TrackingError(f"mlflow server did not answer at {base} within {timeout:.0f} s (its log: {log})")


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop the server and its workers (its process group): SIGTERM, then SIGKILL after `grace` s."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
