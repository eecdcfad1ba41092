"""`python -m evo.ui`: the MLflow UI on a tiny store, its printed links, and its clear refusals."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from evo.tracking import SEARCHES_VIEW, Tracker
from evo.tracking.server import free_port, port_taken
from evo.ui import main

ROOT = Path(__file__).resolve().parents[1]


def tiny_store(tmp_path: Path, searches: int = 1) -> tuple[str, Tracker]:
    """A store with `searches` finished parent runs (a result each: best, baseline, compute)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = None
    for i in range(searches):
        tracker = Tracker(uri)
        tracker.start_search({"mode": "combined", "seed": i}, run_name=f"combined-tiny-seed{i}")
        tracker.finish({"mode": "combined", "preset": "tiny", "seed": i, "gens": 1,
                        "best": {"key": "g1-c0", "best_val_loss": 2.5 + i, "genes": {"n_layer": 2}},
                        "baseline_best_val_loss": 2.75, "compute": {"flops": 2e12, "full_trainings": 5}})
    return uri, tracker


@pytest.mark.slow
def test_it_serves_the_store_and_the_printed_link_answers(tmp_path):
    uri, tracker = tiny_store(tmp_path, searches=2)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "evo.ui", "--tracking-uri", uri, "--port", str(port), "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    try:
        lines = []
        while len(lines) < 2:
            line = proc.stdout.readline()
            assert line, "evo.ui exited early:\n" + "".join(lines)
            lines.append(line)
        assert lines[0].startswith(f"MLflow UI on {uri}, experiment 'dimorph' (2 searches)")
        url = lines[1].strip()
        exp = tracker.experiment_id
        assert url == (f"http://127.0.0.1:{port}/#/experiments/{exp}/runs?workflowType=machine_learning"
                       f"&viewStateShareKey={SEARCHES_VIEW}")
        with urllib.request.urlopen(url, timeout=30) as r:  # the page (the part after # stays in the browser)
            assert r.status == 200 and b"<html" in r.read().lower()
        api = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/get?experiment_id={exp}"
        with urllib.request.urlopen(api, timeout=30) as r:
            tags = {t["key"]: t["value"] for t in json.load(r)["experiment"]["tags"]}
        state = json.loads(json.loads(tags[f"mlflow.sharedViewState.{SEARCHES_VIEW}"])["state"])
        assert state["searchFilter"] == 'tags.dimorph.kind = "search"'
        assert state["orderByKey"] == "metrics.`final/best_val_loss`" and state["orderByAsc"] is True
        assert "metrics.`final/margin_vs_baseline_pct`" in state["selectedColumns"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    for _ in range(50):  # the server went with it
        if not port_taken("127.0.0.1", port):
            break
        time.sleep(0.2)
    assert not port_taken("127.0.0.1", port)


def test_a_taken_port_and_an_empty_store_are_clear_errors(tmp_path, capsys):
    uri, _ = tiny_store(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["--tracking-uri", uri, "--port", str(port), "--no-browser"]) == 2
    assert f"error: port {port} on 127.0.0.1 is taken (another MLflow UI?): pass --port" in capsys.readouterr().err
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    Tracker(empty)  # the experiment, no search
    assert main(["--tracking-uri", empty, "--no-browser"]) == 2
    assert "has no Dimorph search in experiment 'dimorph': run one first" in capsys.readouterr().err
    assert main(["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", "--no-browser"]) == 2
    assert f"no MLflow database at {tmp_path / 'none.db'}" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "nowhere"), "--no-browser"]) == 2
    assert "no search there (no checkpoint.json)" in capsys.readouterr().err
    assert main(["--tracking-uri", uri, "--experiment", "other", "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert "no experiment 'other'" in err and "(it has: dimorph, Default); pass --experiment" in err


def test_out_opens_the_store_and_run_its_checkpoint_names(tmp_path, capsys, monkeypatch):
    from evo.tracking import server

    uri, tracker = tiny_store(tmp_path, searches=2)
    out = tmp_path / "search"
    out.mkdir()
    (out / "checkpoint.json").write_text(json.dumps({"tracking_uri": uri, "run_id": tracker.run_id}))
    started = []
    monkeypatch.setattr(server, "start", lambda *a: started.append(a) or _Done())
    monkeypatch.setattr(server, "wait_until_up", lambda *a: None)
    monkeypatch.chdir(tmp_path / "search")  # elsewhere: the checkpoint says where the store is
    assert main(["--out", str(out), "--port", "5999", "--no-browser"]) == 0
    text = capsys.readouterr().out
    assert started[0][:3] == (uri, "127.0.0.1", 5999)
    assert f"this search: http://127.0.0.1:5999/#/experiments/{tracker.experiment_id}/runs/{tracker.run_id}" in text
    assert "viewStateShareKey=dimorph-leaderboard" in text


class _Done:
    """A server process that has already exited."""
    pid, returncode = -1, 0

    def wait(self, timeout=None):
        return 0

    def poll(self):
        return 0


@pytest.mark.parametrize("port", ["0", "70000"])
def test_a_bad_port_is_refused_by_name(port, capsys):
    with pytest.raises(SystemExit):
        main(["--port", port])
    assert f"--port {port}: not a port" in capsys.readouterr().err
