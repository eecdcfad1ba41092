"""Reliability of a search around its training: failed trainings, concurrent starts, locks, resume
(finished, extended, from elsewhere, after a kill), signals, unreachable servers, bad folders.

Most tests replace the trainer with a cheap deterministic fake (FakeEval), so a whole search takes
seconds; what they check is the driver: checkpoint, MLflow and report.
"""
import csv
import json
import math
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from engine_helpers import fast_config, outcome
from evo.checkpoint import Checkpoint, CheckpointError
from evo.run import cli, main
from evo.tracking import BY_COST

ROOT = Path(__file__).resolve().parents[1]


class FakeEval:
    """A deterministic stand-in for evo.evaluate.evaluate: loss curves from the task's seed.

    Like the real one it saves a state file after an early phase and reads it to continue (a
    missing file raises FileNotFoundError); `fail` keys come back as failed results, as a worker
    killed three times does; `hook(task, n)` runs before the n-th evaluation (1-based).
    """

    def __init__(self, fail=(), hook=None):
        self.fail, self.hook, self.calls = set(fail), hook, []
        self.setup_error = False  # a missing state raises SetupError naming it, as evo.evaluate does

    def __call__(self, task) -> dict:
        self.calls.append(task.key)
        if self.hook:
            self.hook(task, len(self.calls))
        if task.key in self.fail:
            return {"key": task.key, "phase": task.phase, "diverged": False,
                    "error": "worker died 3 times: killed by SIGKILL"}
        if task.load_state:
            if self.setup_error and not os.path.exists(task.load_state):
                from models.data import SetupError
                raise SetupError(f"evaluation {task.key}: cannot read the saved early state {task.load_state}")
            with open(task.load_state) as f:
                assert json.load(f)["key"] == task.key.split("/")[0]
        rng = random.Random(task.seed)
        floor, speed = 1.5 + rng.random(), 3.0 + 20.0 * rng.random()
        E, n = task.preset.early_steps, task.steps
        train = [floor + 2.5 * math.exp(-s / speed) + 0.01 * rng.random() for s in range(1, n + 1)]
        steps = sorted({0, *(s for s in (E, task.preset.full_steps) if s <= n)})
        val = [floor + 0.1 + 2.5 * math.exp(-s / speed) for s in steps]
        best = min(range(len(val)), key=val.__getitem__)
        if task.save_state and task.phase == "early":
            Path(task.save_state).write_text(json.dumps({"key": task.key, "steps": n}))
        return {"key": task.key, "phase": task.phase, "error": None, "steps": n, "train_losses": train,
                "eval_steps": steps, "val_losses": val, "train_eval_losses": [v - 0.05 for v in val],
                "best_val_loss": val[best], "best_val_step": steps[best], "final_val_loss": val[-1],
                "final_train_loss": train[-1], "diverged": False, "diverge_reason": None,
                "wall_time": 0.01 * n, "flops": 1e6 * n, "tokens": 64 * n, "n_params": 1000 + int(100 * floor),
                "tokens_per_s": 6400.0, "eval_seconds": 0.01}


@pytest.fixture
def fake(monkeypatch):
    """Install a FakeEval as the executors' evaluation function; tests set .fail/.hook on it."""
    import evo.executors
    ev = FakeEval()
    monkeypatch.setattr(evo.executors, "default_fn", lambda: ev)
    return ev


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store, created once (creating one takes seconds of migrations)."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, migrated_db):
    """A copy of the empty store where fast_config(tmp_path, ...) logs; returns a copier for more."""
    def copy(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "mlflow.db").write_bytes(migrated_db.read_bytes())
    copy(tmp_path)
    return copy


def parent_of(cfg) -> tuple[MlflowClient, object]:
    ck = json.loads((cfg.out_dir / "checkpoint.json").read_text())
    client = MlflowClient(ck.get("tracking_uri") or cfg.tracking_uri)
    return client, client.get_run(ck["run_id"])


def children(client, parent):
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=1000)


def assert_each_point_once(client, runs) -> None:
    """No run holds two points of one metric at one step."""
    for run in runs:
        for key in client.get_run(run.info.run_id).data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert len(steps) == len(set(steps)), (run.info.run_name, key, steps)


def cli_args(cfg, *extra) -> list[str]:
    """The command line of a fast_config (for cli())."""
    args = ["--gens", str(cfg.gens), "--full-steps", "30", "--early-frac", "0.2", "--bootstrap", "4",
            "--males", "4", "--females", "12", "--offspring", "3", "--promote", "1", "--promote-random", "1",
            "--pred-steps", "2", "--inference-samples", "1", "--inference-tokens", "8", "--no-progress",
            "--workers", "0", "--start", cfg.start, "--out", str(cfg.out_dir), "--data", str(cfg.data)]
    if cfg.tracking_uri:
        args += ["--tracking-uri", cfg.tracking_uri]
    return args + list(extra)


# -- 1. failed trainings ------------------------------------------------------------------------------
def test_failed_full_trainings_do_not_stop_the_report_or_resume(tmp_path, shakespeare_path, fake, store):
    fake.fail = {"g0-b1/full", "g0-b2/full"}  # two bootstrap continuations lost (workers killed)
    cfg = fast_config(tmp_path, shakespeare_path, gens=1)
    summary = main(cfg)
    assert summary["best"]["key"] not in ("g0-b1", "g0-b2") and summary["best"]["best_val_loss"] < 4
    rows = {r["key"]: r for r in csv.DictReader(open(cfg.out_dir / "results.csv"))}
    assert rows["g0-b1"]["error"] == rows["g0-b2"]["error"] == "worker died 3 times: killed by SIGKILL"
    assert rows["g0-b1"]["best_val_loss"] == "" and rows["g0-b0"]["error"] == ""
    assert (cfg.out_dir / "val_curves.png").stat().st_size > 0
    client, parent = parent_of(cfg)
    assert parent.info.status == "FINISHED"
    failed = {k.data.tags["dimorph.eval_key"]: k.info.status for k in children(client, parent)}
    assert failed["g0-b1"] == "FAILED" and failed["g0-b0"] == "FINISHED"
    assert_each_point_once(client, [parent, *children(client, parent)])  # early and full phases included
    again = main(fast_config(tmp_path, shakespeare_path, gens=1, resume=True))
    assert again["best"] == summary["best"]
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_an_error_while_finishing_fails_the_run_and_resume_finishes_it(tmp_path, shakespeare_path, fake, store,
                                                                      monkeypatch):
    import evo.report

    def broken(search, tracker, summary):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evo.report, "write_all", broken)
    cfg = fast_config(tmp_path, shakespeare_path, gens=1)
    with pytest.raises(OSError, match="No space left"):
        main(cfg)
    client, parent = parent_of(cfg)
    assert parent.info.status == "FAILED"  # never left RUNNING
    monkeypatch.undo()
    import evo.executors
    monkeypatch.setattr(evo.executors, "default_fn", lambda: fake)
    n = len(fake.calls)
    summary = main(fast_config(tmp_path, shakespeare_path, gens=1, resume=True))
    assert len(fake.calls) == n  # nothing retrained
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert (cfg.out_dir / "summary.json").exists()
    import csv
    rows = [r for r in csv.DictReader(open(cfg.out_dir / "results.csv")) if r["best_val_loss"]]
    assert summary["best"]["best_val_loss"] == pytest.approx(min(float(r["best_val_loss"]) for r in rows))
    assert json.loads((cfg.out_dir / "summary.json").read_text())["best"] == summary["best"]


# -- 2. concurrent starts on a new sqlite store ------------------------------------------------------
def _start_tracker(uri: str, go, q) -> None:
    from evo.tracking import Tracker
    go.wait(30)
    try:
        q.put(("ok", Tracker(uri, "dimorph").experiment_id))
    except BaseException as e:  # reported to the test, whatever it is
        q.put(("error", f"{type(e).__name__}: {e}"[:300]))


def test_searches_started_at_once_create_the_sqlite_store_once(tmp_path):
    import evo.tracking  # noqa: F401  (mlflow imported before the fork: the children start at once)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = mp.get_context("fork")
    go, q = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_start_tracker, args=(uri, go, q)) for _ in range(4)]
    for p in procs:
        p.start()
    go.set()
    got = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert [g[0] for g in got] == ["ok"] * 4, got
    assert len({g[1] for g in got}) == 1  # one experiment, created once
    client = MlflowClient(uri)  # the store is complete: a run can be written and read back
    run = client.create_run(got[0][1])
    client.log_metric(run.info.run_id, "x", 1.0, step=3)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "x")] == [3]
    assert (tmp_path / "mlflow.db.lock").exists()


# -- 3. one process per output folder ------------------------------------------------------------------
def test_a_second_process_on_the_same_out_stops_at_once(tmp_path, shakespeare_path, fake, store, capsys):
    cfg = fast_config(tmp_path, shakespeare_path, gens=1)
    seen = {}

    def resume_meanwhile(task, n):
        if n == 3:  # the first search is training: a --resume on its folder must not join in
            t0 = time.perf_counter()
            seen["rc"] = cli(cli_args(cfg, "--resume"))
            seen["s"] = time.perf_counter() - t0
            seen["err"] = capsys.readouterr().err

    fake.hook = resume_meanwhile
    summary = main(cfg)
    assert seen["rc"] == 2 and seen["s"] < 10
    assert str(cfg.out_dir) in seen["err"] and "another process" in seen["err"]
    assert f"pid {os.getpid()}" in seen["err"]
    ids = [json.loads(ln)["id"] for ln in (cfg.out_dir / "journal.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids))  # nothing done twice
    assert len(fake.calls) == len(set(fake.calls))
    # the lock is released with the search: the folder can be resumed now
    assert main(fast_config(tmp_path, shakespeare_path, gens=1, resume=True))["best"] == summary["best"]


def test_checkpoint_lock_is_exclusive_until_closed(tmp_path):
    first = Checkpoint(tmp_path / "out", {"seed": 0}, resume=False)
    first.snapshot({})
    for resume in (True, False):  # a resume, or a fresh start that would otherwise be told to --resume
        with pytest.raises(CheckpointError, match="is in use: another process"):
            Checkpoint(tmp_path / "out", {"seed": 0}, resume=resume)
    first.close()
    with pytest.raises(CheckpointError, match="already holds a search; pass --resume"):
        Checkpoint(tmp_path / "out", {"seed": 0}, resume=False)
    second = Checkpoint(tmp_path / "out", {"seed": 0}, resume=True)
    second.close()


# -- 4. resuming a finished search; extending it; the dataset is part of the search ------------------
def test_resume_of_a_finished_search_leaves_it_finished_and_more_gens_extend_it(tmp_path, shakespeare_path, fake, store):
    cfg = fast_config(tmp_path, shakespeare_path, gens=1)
    main(cfg)
    client, parent = parent_of(cfg)
    main(fast_config(tmp_path, shakespeare_path, gens=1, resume=True))
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    n = len(fake.calls)
    extended = main(fast_config(tmp_path, shakespeare_path, gens=2, resume=True))
    assert len(fake.calls) == n + 3 + 2  # generation 2 only: 3 early phases, 2 continuations
    run = client.get_run(parent.info.run_id)
    assert run.info.status == "FINISHED" and extended["gens"] == 2
    assert [m.step for m in client.get_metric_history(run.info.run_id, "search/best_val_loss")] == [0, 1, 2]
    # the same as a search of 2 generations from the start
    store(tmp_path / "straight")
    straight = main(fast_config(tmp_path / "straight", shakespeare_path, gens=2))
    assert outcome(extended, cfg.out_dir) == outcome(straight, tmp_path / "straight" / "out")
    assert main(fast_config(tmp_path, shakespeare_path, gens=2, resume=True))["best"] == extended["best"]
    with pytest.raises(CheckpointError, match="gens=2.*not shortened to gens=1"):
        main(fast_config(tmp_path, shakespeare_path, gens=1, resume=True))


def test_resume_with_another_dataset_is_refused(tmp_path, shakespeare_path, fake, store):
    main(fast_config(tmp_path, shakespeare_path, gens=1))
    other = tmp_path / "other.txt"
    other.write_text(shakespeare_path.read_text()[:50_000])
    with pytest.raises(CheckpointError, match="'data': \\('sha256:[0-9a-f]{64}', 'sha256:[0-9a-f]{64}'\\)"):
        main(fast_config(tmp_path, other, gens=1, resume=True))
    copy = tmp_path / "copy.txt"  # the same text elsewhere is the same dataset
    copy.write_bytes(shakespeare_path.read_bytes())
    main(fast_config(tmp_path, copy, gens=1, resume=True))


# -- 5. an unreachable tracking server -----------------------------------------------------------------
@pytest.mark.slow
def test_unreachable_tracking_server_fails_fast_with_one_line(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text("to be or not to be, that is the question\n" * 200)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    env["PYTHONPATH"] = str(ROOT)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "evo.run", "--tracking-uri", "http://127.0.0.1:9",
                           "--out", str(tmp_path / "out"), "--data", str(data), "--no-progress", "--workers", "0"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert took < 40
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: cannot reach the MLflow tracking server http://127.0.0.1:9: ")
    assert "Connection refused" in lines[-1] and "Traceback" not in proc.stderr


def test_quick_http_settings_only_while_connecting_and_never_over_the_users(monkeypatch):
    from evo.tracking import TrackingError, Tracker
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    t0 = time.perf_counter()
    with pytest.raises(TrackingError, match="http://127.0.0.1:9"):
        Tracker("http://127.0.0.1:9")
    assert time.perf_counter() - t0 < 30
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # restored for the rest of the search
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"


# -- 6. resume from another working directory; export reads only ---------------------------------------
def test_resume_elsewhere_uses_the_store_the_search_started_with(tmp_path, shakespeare_path, fake, monkeypatch,
                                                                 capsys, migrated_db):
    from evo.export import main as export_main
    from evo.tracking import resolve_uri
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    here, there, third = (tmp_path / d for d in ("a", "b", "c"))
    for d in (here, there, third):
        d.mkdir()
    (here / "mlflow.db").write_bytes(migrated_db.read_bytes())  # the default store of `here`, premigrated
    monkeypatch.chdir(here)
    assert resolve_uri("sqlite:///rel.db") == f"sqlite:///{here / 'rel.db'}"
    cfg = fast_config(tmp_path, shakespeare_path, gens=1, tracking_uri=None)

    def stop(task, n):
        if n == 6:
            raise KeyboardInterrupt

    fake.hook = stop
    with pytest.raises(SystemExit) as e:
        main(cfg)
    assert e.value.code == 130
    fake.hook = None
    monkeypatch.chdir(there)
    summary = main(fast_config(tmp_path, shakespeare_path, gens=1, tracking_uri=None, resume=True))
    assert not (there / "mlflow.db").exists()
    assert summary["mlflow"]["tracking_uri"] == f"sqlite:///{here / 'mlflow.db'}"
    run = MlflowClient(f"sqlite:///{here / 'mlflow.db'}").get_run(summary["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    monkeypatch.chdir(third)
    capsys.readouterr()
    assert export_main(["--run-id", summary["mlflow"]["run_id"]]) == 2
    err = capsys.readouterr().err
    assert f"no MLflow database at {third / 'mlflow.db'}" in err
    assert not (third / "mlflow.db").exists()
    assert export_main(["--run-id", summary["mlflow"]["run_id"], "--tracking-uri",
                        f"sqlite:///{here / 'mlflow.db'}", "--out", str(third / "p")]) == 0
    assert export_main(["--run-id", "0" * 32, "--tracking-uri", f"sqlite:///{here / 'mlflow.db'}"]) == 2
    assert f"run {'0' * 32} is not in" in capsys.readouterr().err


# -- 7. a kill between an MLflow write and its journal line ---------------------------------------------
class SimulatedKill(BaseException):
    """The process dies here (after MLflow took a write, before the journal recorded it)."""


def test_writes_repeated_after_a_kill_log_nothing_twice(tmp_path, shakespeare_path, fake, store, monkeypatch):
    real = Checkpoint.record
    kills = ["log/g0-b1", "log/g0-b0/full", "best/g0-b0/full", "gen/0", "pred/g1-c0"]

    def record(self, event_id, value):
        if kills and event_id == kills[0]:
            kills.pop(0)
            raise SimulatedKill(event_id)
        return real(self, event_id, value)

    monkeypatch.setattr(Checkpoint, "record", record)
    cfg = fast_config(tmp_path, shakespeare_path, gens=1)
    for attempt in range(6):
        try:
            summary = main(fast_config(tmp_path, shakespeare_path, gens=1, resume=attempt > 0))
            break
        except SimulatedKill:
            pass
    assert attempt == 5 and not kills
    client, parent = parent_of(cfg)
    assert parent.info.status == "FINISHED" and summary["mlflow"]["run_id"] == parent.info.run_id
    kids = children(client, parent)
    assert len(kids) == 4 + 3
    assert_each_point_once(client, [parent, *kids])
    b0 = next(k for k in kids if k.data.tags["dimorph.eval_key"] == "g0-b0")
    assert [m.step for m in client.get_metric_history(b0.info.run_id, "train/loss")] == list(range(1, 31))
    assert [m.step for m in client.get_metric_history(b0.info.run_id, "val/loss")] == [0, 6, 30]
    # a continuation adds its own scalar point (stepped by the budget reached), which the run shows
    assert [(m.step, m.value) for m in client.get_metric_history(b0.info.run_id, "cost/flops")] == [(6, 6e6), (30, 30e6)]
    assert client.get_run(b0.info.run_id).data.metrics["cost/flops"] == 30e6
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "search/best_val_loss")] == [0, 1]
    stair = sorted((m.step, m.value) for m in client.get_metric_history(parent.info.run_id, BY_COST))
    assert stair[-1][1] == parent.data.metrics["final/best_val_loss"] and len({s for s, _ in stair}) == len(stair)


# -- 8. SIGTERM, an unwritable --out, deleted states, telemetry --------------------------------------------
class SigtermNotHandled(Exception):
    """What this test's own SIGTERM handler raises: the search did not install its own."""


def test_sigterm_saves_the_checkpoint_and_marks_the_run_killed(tmp_path, shakespeare_path, fake, store):
    def guard(signum, frame):
        raise SigtermNotHandled

    def terminate(task, n):
        if n == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs here, in the main thread

    previous = signal.signal(signal.SIGTERM, guard)
    try:
        fake.hook = terminate
        cfg = fast_config(tmp_path, shakespeare_path, gens=1)
        with pytest.raises(SystemExit) as e:
            main(cfg)
        assert e.value.code == 143
        assert signal.getsignal(signal.SIGTERM) is guard  # the search put the previous handler back
    finally:
        signal.signal(signal.SIGTERM, previous)
    client, parent = parent_of(cfg)
    assert parent.info.status == "KILLED"
    assert sum(1 for ln in (cfg.out_dir / "journal.jsonl").read_text().splitlines() if '"eval/' in ln) == 2
    fake.hook = None
    summary = main(fast_config(tmp_path, shakespeare_path, gens=1, resume=True))
    assert client.get_run(parent.info.run_id).info.status == "FINISHED" and summary["best"]


def test_unwritable_out_is_one_clear_error(tmp_path, shakespeare_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = fast_config(tmp_path, shakespeare_path, gens=1, out=str(blocker / "out"))
    assert cli(cli_args(cfg)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot write to the output folder {blocker / 'out'}: ")
    assert "choose a writable --out" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()  # refused before MLflow was touched


def test_a_deleted_state_file_is_retrained_from_step_0_with_the_same_result(tmp_path, shakespeare_path, fake,
                                                                            store, capsys):
    whole = main(fast_config(tmp_path / "whole", shakespeare_path, gens=1))

    def stop_at_first_continuation(task, n):
        if task.phase == "full":
            raise KeyboardInterrupt

    fake.hook = stop_at_first_continuation
    cfg = fast_config(tmp_path, shakespeare_path, gens=1)
    with pytest.raises(SystemExit) as e:
        cli(cli_args(cfg))
    assert e.value.code == 130
    states = sorted((cfg.out_dir / "states").glob("*.pt"))
    assert [p.name for p in states] == ["g0-b0.pt", "g0-b1.pt", "g0-b2.pt", "g0-b3.pt"]
    for p in states:
        p.unlink()
    fake.hook, n = None, len(fake.calls)
    capsys.readouterr()
    assert cli(cli_args(cfg, "--resume")) == 0
    err = capsys.readouterr().err
    assert err.count("is missing;") == 4 and f"the saved training state {states[0]} is missing" in err
    summary = json.loads((cfg.out_dir / "summary.json").read_text())
    assert summary["best"]["best_val_loss"] == whole["best"]["best_val_loss"]  # the same seed, the same result
    assert summary["best"]["key"] == whole["best"]["key"]
    E = fast_config(tmp_path, shakespeare_path).full_steps * 0.2
    extra = sum(1e6 * E for k in fake.calls[n:] if k in {f"g0-b{i}/full" for i in range(4)})
    assert summary["compute"]["flops"] == pytest.approx(whole["compute"]["flops"] + extra)  # 4 early phases again
    # the restarts are journaled: a second resume replays them, and trains nothing
    n = len(fake.calls)
    assert cli(cli_args(cfg, "--resume")) == 0 and len(fake.calls) == n


def test_a_disk_fault_while_saving_a_state_stops_the_search_and_books_nothing(tmp_path, shakespeare_path, store,
                                                                             monkeypatch, capsys):
    """torch's writer raises RuntimeError on a full disk: that is not a failed training."""
    import models.train

    real = models.train.save_state
    saved = []

    def full_disk(state, path):
        if len(saved) >= 3:
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 1536 vs 1472")
        saved.append(path)
        real(state, path)

    cfg = fast_config(tmp_path, shakespeare_path, gens=0)
    monkeypatch.setattr(models.train, "save_state", full_disk)
    assert cli(cli_args(cfg)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: evaluation g0-b3: cannot write the training state ")
    assert "unexpected pos" in err[0] and "resume to train it again" in err[0]
    journal = [json.loads(x)["id"] for x in (cfg.out_dir / "journal.jsonl").read_text().splitlines()]
    assert "eval/g0-b3" not in journal and {"eval/g0-b0", "eval/g0-b1", "eval/g0-b2"} <= set(journal)
    monkeypatch.setattr(models.train, "save_state", real)
    assert cli(cli_args(cfg, "--resume")) == 0
    after = json.loads((cfg.out_dir / "summary.json").read_text())
    whole = main(fast_config(tmp_path / "whole", shakespeare_path, gens=0))
    assert after["best"]["key"] == whole["best"]["key"]
    assert after["best"]["best_val_loss"] == whole["best"]["best_val_loss"]
    assert after["compute"]["full_trainings"] == whole["compute"]["full_trainings"] == 4


@pytest.mark.slow
def test_mlflow_telemetry_is_off_unless_the_user_opts_in(tmp_path):
    ci = {"PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS",
          "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION",
          "CLOUD_RUN_EXECUTION", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"}
    env = {k: v for k, v in os.environ.items() if k not in ci and not k.startswith("RUNBOT_")}
    env["PYTHONPATH"] = str(ROOT)
    code = ("import os, evo.tracking; from mlflow.telemetry import get_telemetry_client; "
            "print(os.environ.get('MLFLOW_DISABLE_TELEMETRY'), get_telemetry_client() is None)")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["true", "True"], out.stderr[-2000:]
    out = subprocess.run([sys.executable, "-c", "import os, evo.tracking; print(os.environ['MLFLOW_DISABLE_TELEMETRY'])"],
                         env={**env, "MLFLOW_DISABLE_TELEMETRY": "false"}, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.split() == ["false"], out.stderr[-2000:]


def test_a_journaled_result_for_other_genes_is_refused(tmp_path):
    """Resume replays journaled evaluations only when they were trained for the same genes."""
    from types import SimpleNamespace

    from evo.checkpoint import Checkpoint, CheckpointError

    ck = Checkpoint(tmp_path / "out", {"seed": 0}, resume=False)
    task = SimpleNamespace(key="g1-c0", genes={"n_layer": 2, "lr": 0.001})
    calls = []
    first = ck.evaluation(task, lambda: calls.append(1) or {"key": "g1-c0", "best_val_loss": 2.5})
    assert first == {"key": "g1-c0", "best_val_loss": 2.5, "genes": task.genes} and calls == [1]
    ck.snapshot({})
    ck.close()
    ck = Checkpoint(tmp_path / "out", {"seed": 0}, resume=True)
    assert ck.evaluation(task, lambda: calls.append(2)) == first and calls == [1]  # replayed, not rerun
    other = SimpleNamespace(key="g1-c0", genes={"n_layer": 3, "lr": 0.001})
    with pytest.raises(CheckpointError, match=r"eval/g1-c0 was trained for genes .*'n_layer': 2.* asks for .*'n_layer': 3"):
        ck.evaluation(other, lambda: calls.append(3))
    assert calls == [1]
    ck.close()


@pytest.mark.slow
def test_a_kill_while_the_model_is_logged_leaves_no_pending_model_after_resume(tmp_path, shakespeare_path, store,
                                                                              monkeypatch):
    import mlflow.pytorch
    from mlflow.entities import LoggedModelStatus

    real = mlflow.pytorch.log_model

    def killed(*a, **k):
        raise KeyboardInterrupt  # after the logged model was created, before it was finalized

    cfg = fast_config(tmp_path, shakespeare_path, gens=0)
    monkeypatch.setattr(mlflow.pytorch, "log_model", killed)
    with pytest.raises(SystemExit) as e:
        cli(cli_args(cfg))
    assert e.value.code == 130
    client, parent = parent_of(cfg)
    models = client.search_logged_models([parent.info.experiment_id])
    assert [m.status for m in models] == [LoggedModelStatus.PENDING]
    monkeypatch.setattr(mlflow.pytorch, "log_model", real)
    assert cli(cli_args(cfg, "--resume")) == 0
    models = client.search_logged_models([parent.info.experiment_id])
    assert [m.status for m in models] == [LoggedModelStatus.READY]
    assert models[0].source_run_id == parent.info.run_id
