"""An unusable environment (no data, a bad device, an unknown gene) stops a search at once with its
message and exit code 2; a training that fails is still a failed result."""
import dataclasses
import os
import subprocess
import sys

import pytest

from exec_helpers import FakeTask
from models import data as data_mod
from models.data import SetupError

TINY_SEARCH = ["--preset", "tiny", "--gens", "1", "--full-steps", "30", "--early-frac", "0.2",
               "--bootstrap", "4", "--males", "4", "--females", "12", "--offspring", "3",
               "--promote", "1", "--promote-random", "1", "--pred-steps", "2",
               "--inference-samples", "1", "--inference-tokens", "8", "--no-progress"]


def setup_error_eval(task) -> dict:
    """Stand-in evaluation: notes each start in meta['log'], raises SetupError for meta['setup']."""
    with open(task.meta["log"], "a") as f:
        f.write(task.key + "\n")
    if task.meta.get("setup"):
        raise SetupError(f"no data for {task.key}: pass --data PATH or set DIMORPH_DATA=PATH")
    return {"key": task.key, "error": None, "diverged": False, "phase": task.phase}


def fake_tasks(log, bad="t1", n=4):
    return [FakeTask(key=f"t{i}", seed=i, meta={"log": str(log), "setup": f"t{i}" == bad})
            for i in range(n)]


@pytest.fixture
def offline(monkeypatch):
    """No network: the one-time download fails as it does offline."""
    def no_network(url, dest, sha256=None):
        raise OSError("[Errno 101] Network is unreachable")
    monkeypatch.setattr(data_mod, "download", no_network)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any model gets trained."""
    import models.train

    def train(*args, **kw):
        raise AssertionError("a model was trained")
    monkeypatch.setattr(models.train, "train", train)


def eval_task(**kw):
    from evo.evaluate import EvalTask
    from models.presets import get_preset

    p = dataclasses.replace(get_preset("tiny"), full_steps=20, train_tokens=2000)
    return EvalTask(**{"key": "e0", "genes": p.baseline, "preset": p, "steps": 2, "seed": 0, **kw})


@pytest.mark.parametrize("env", ["missing-file", "unset"])
def test_offline_first_run_stops_at_once(env, tmp_path, monkeypatch, capsys, offline, no_training):
    import evo.evaluate
    from evo.run import cli

    if env == "missing-file":
        monkeypatch.setenv("DIMORPH_DATA", str(tmp_path / "missing.txt"))
    calls = []
    real = evo.evaluate.evaluate

    def counting(task):
        calls.append(task.key)
        return real(task)
    monkeypatch.setattr(evo.evaluate, "evaluate", counting)
    code = cli([*TINY_SEARCH, "--workers", "0", "--out", str(tmp_path / "out"),
                "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(calls) <= 1  # the first evaluation (if any) stops the search: nothing else is tried
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "--data" in last and "DIMORPH_DATA" in last
    if env == "missing-file":
        assert str(tmp_path / "missing.txt") in last
    else:
        assert "Network is unreachable" in last and data_mod.DATA_URL in last
    assert "Traceback" not in err and "calibrate" not in err


def test_evaluation_raises_setup_errors(tmp_path, monkeypatch, offline, no_training):
    from evo.evaluate import evaluate

    with pytest.raises(SetupError, match="missing.txt' \\(--data\\) does not exist"):
        evaluate(eval_task(data=str(tmp_path / "missing.txt")))
    monkeypatch.setenv("DIMORPH_DATA", str(tmp_path))
    with pytest.raises(SetupError, match=f"DIMORPH_DATA='{tmp_path}' is not a file"):
        evaluate(eval_task())
    monkeypatch.delenv("DIMORPH_DATA")
    with pytest.raises(data_mod.DataUnavailable, match="--data PATH, set DIMORPH_DATA=PATH"):
        evaluate(eval_task())
    with pytest.raises(SetupError, match=r"evaluation e0: unknown gene\(s\) \['n_layers'\]"):
        evaluate(eval_task(genes={"n_layers": 2}))
    with pytest.raises(SetupError, match="bad device 'gpu0'"):
        evaluate(eval_task(device="gpu0"))
    with pytest.raises(SetupError, match="device must be cpu, cuda, cuda:N or mps, got 'meta'"):
        evaluate(eval_task(device="meta"))
    with pytest.raises(SetupError, match="device 'cuda:99'"):
        evaluate(eval_task(device="cuda:99"))


def test_unreadable_or_unusable_data_is_a_setup_error(tmp_path, shakespeare_path, no_training):
    from evo.evaluate import evaluate

    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    with pytest.raises(SetupError, match="latin1.txt is not UTF-8 text"):
        evaluate(eval_task(data=str(latin1)))
    short = tmp_path / "short.txt"
    short.write_text(shakespeare_path.read_text()[:2000])  # 1800 train tokens < train_tokens 2000
    with pytest.raises(SetupError, match=r"train_tokens=2000 must be in \[34, 1800\]"):
        evaluate(eval_task(data=str(short)))
    with pytest.raises(SetupError, match="cannot read the saved early state"):
        evaluate(eval_task(data=str(shakespeare_path), load_state=str(tmp_path / "none.pt")))


@pytest.mark.parametrize("exc", [RuntimeError("CUDA error: an illegal memory access"),
                                 RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                 ValueError("a bad shape inside the step")])
def test_training_failures_stay_failed_results(exc, monkeypatch, shakespeare_path):
    import models.train
    from evo.evaluate import evaluate, failed

    def train(*args, **kw):
        raise exc
    monkeypatch.setattr(models.train, "train", train)
    res = evaluate(eval_task(data=str(shakespeare_path)))
    assert failed(res) and res["error"] == f"{type(exc).__name__}: {exc}"
    assert res["key"] == "e0" and res["diverged"] is False


def test_serial_and_process_executors_raise_it_unretried(tmp_path):
    from evo.executors import ProcessExecutor, SerialExecutor

    log = tmp_path / "serial.log"
    with pytest.raises(SetupError, match="no data for t1"):
        list(SerialExecutor(fn=setup_error_eval).run(fake_tasks(log)))
    assert log.read_text().split() == ["t0", "t1"]
    log = tmp_path / "process.log"
    with ProcessExecutor(2, retries=2, fn=setup_error_eval) as ex:
        with pytest.raises(SetupError, match="no data for t1"):
            list(ex.run(fake_tasks(log)))
        assert log.read_text().split().count("t1") == 1  # not retried
        assert ex.started == 2  # no worker was restarted for it


def test_process_executor_real_evaluation_without_data(tmp_path):
    from evo.executors import ProcessExecutor

    with ProcessExecutor(1, retries=2) as ex:
        with pytest.raises(SetupError, match="missing.txt' \\(--data\\) does not exist"):
            list(ex.run([eval_task(data=str(tmp_path / "missing.txt"))]))
        assert ex.started == 1


def test_unpicklable_setup_error_keeps_its_kind():
    from evo.executors import _portable

    class Odd(SetupError):
        def __init__(self, a, b):
            super().__init__(f"{a} and {b}")

    e = _portable(Odd("no data", "no network"))
    assert type(e) is SetupError and str(e) == "no data and no network"
    bug = _portable(TypeError(lambda: None))
    assert type(bug) is RuntimeError and bug.args[0].startswith("TypeError: <function")


@pytest.mark.slow
def test_dask_executor_raises_it_unretried(tmp_path):
    pytest.importorskip("distributed")
    from evo.dask_executor import DaskExecutor

    log = tmp_path / "dask.log"
    with DaskExecutor(local_workers=1, retries=2, fn=setup_error_eval) as ex:
        with pytest.raises(SetupError, match="no data for t1"):
            list(ex.run(fake_tasks(log, n=3)))
    assert log.read_text().split().count("t1") == 1


def test_models_train_without_data(tmp_path, monkeypatch, capsys, offline):
    from models.train import main

    with pytest.raises(SystemExit) as e:
        main(["--steps", "2", "--no-inference", "--device", "cpu"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("python -m models.train: error: Tiny Shakespeare not found and the "
                          "download failed") and err.count("\n") == 1
    assert "--data" in err and "DIMORPH_DATA" in err


def test_models_train_cli_missing_data_one_paragraph(tmp_path):
    missing = tmp_path / "missing.txt"
    env = {**os.environ, "DIMORPH_DATA": str(missing), "DIMORPH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "models.train", "--steps", "2", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"python -m models.train: error: DIMORPH_DATA='{missing}' does not exist; "
                           f"point it at a UTF-8 text file, pass --data PATH instead, or unset it "
                           f"to use Tiny Shakespeare\n")


def test_tests_train_on_dimorph_data(tmp_path, shakespeare_path):
    from conftest import CORPUS, is_tiny_shakespeare, pick_corpus

    mine, real = tmp_path / "mine.txt", tmp_path / "real.txt"
    mine.write_text("to be or not to be\n" * 50)
    real.write_bytes(shakespeare_path.read_bytes())
    assert pick_corpus({"DIMORPH_DATA": str(mine)}, real_text=real) == mine
    assert pick_corpus({}, real_text=real) == real
    assert pick_corpus({"DIMORPH_DATA": ""}, real_text=tmp_path / "absent.txt") is None
    assert not is_tiny_shakespeare(mine) and not is_tiny_shakespeare(tmp_path / "absent.txt")
    if CORPUS is not None:  # the session's corpus is the one DIMORPH_DATA or ../shared named
        assert shakespeare_path == CORPUS.resolve()
