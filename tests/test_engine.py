"""The co-evolution loop end to end: MLflow structure, modes, determinism, resume, bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from engine_helpers import fast_config, outcome
from evo.config import Config, parse_config
from evo.run import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def combined(tmp_path_factory, shakespeare_path):
    """One finished 2-generation combined search, shared by the read-back tests."""
    tmp = tmp_path_factory.mktemp("combined")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIMORPH_CACHE", str(tmp / "cache"))
        cfg = fast_config(tmp, shakespeare_path, gens=2)
        summary = main(cfg)
    return cfg, summary


def children_of(client, run_id, exp_id):
    return client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'", max_results=1000)


@pytest.mark.slow
def test_mlflow_structure(combined, tmp_path):
    cfg, summary = combined
    client = MlflowClient(cfg.tracking_uri)
    parent = client.get_run(summary["mlflow"]["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.params["mode"] == "combined" and parent.data.params["gens"] == "2"
    assert parent.data.params["preset.full_steps"] == "30"
    hist = client.get_metric_history(parent.info.run_id, "search/best_val_loss")
    assert [m.step for m in hist] == [0, 1, 2]
    assert all(a.value >= b.value for a, b in zip(hist, hist[1:]))  # best-so-far never rises
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "search/champion_tau")] == [0, 1, 2]
    kids = children_of(client, parent.info.run_id, parent.info.experiment_id)
    # 4 bootstrap + 2 x 3 children, one run each (early phase and continuation share it)
    assert len(kids) == 10
    assert len({k.data.tags["dimorph.eval_key"] for k in kids}) == 10
    full = [k for k in kids if "arch/best_val_loss" in k.data.metrics]
    assert len(full) == 4 + 2 * 2  # bootstrap + (1 promoted + 1 random) per generation
    one = next(k for k in full if k.data.tags["dimorph.generation"] == "2")
    assert {"gene/n_layer", "gene/lr", "seed"} <= set(one.data.params)
    assert one.data.tags["dimorph.role"] in ("promoted", "random")
    assert len(one.data.tags["dimorph.parents"].split(",")) == 2
    assert "dimorph.predictor" in one.data.tags and "pred/predicted_final" in one.data.metrics
    train = client.get_metric_history(one.info.run_id, "train/loss")
    assert [m.step for m in train] == list(range(1, 31))  # early steps 1-6, continuation 7-30, no repeats
    val = client.get_metric_history(one.info.run_id, "val/loss")
    # 6 validation points inside the early budget (steps 1-6 here), then every 30 steps
    assert [m.step for m in val] == [0, 1, 2, 3, 4, 5, 6, 30]
    assert abs(min(m.value for m in val) - one.data.metrics["arch/best_val_loss"]) < 1e-9
    assert not [m for m in one.data.metrics if m.startswith("feat/")]  # the features are one artifact
    feats = json.loads(Path(client.download_artifacts(one.info.run_id, "features.json", str(tmp_path))).read_text())
    assert len(feats) >= 20 and all(isinstance(v, float) or v is None for v in feats.values())
    assert feats["v_last"] == pytest.approx(val[[m.step for m in val].index(6)].value)
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.csv", "summary.json", "best_vs_compute.png", "predictors"} <= arts
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "predictors")} >= {
        "predictors/predictor_0.json", "predictors/predictor_0.tex", "predictors/predictor_0.txt"}


def test_summary_and_files(combined):
    cfg, summary = combined
    b = summary["best"]
    assert b["best_val_loss"] <= summary["baseline_best_val_loss"]  # the baseline is in the archive
    import csv
    import math

    from evo.evaluate import token_data
    from evo.space import search_preset
    rows = list(csv.DictReader(open(cfg.out_dir / "results.csv")))
    assert b["best_val_loss"] == pytest.approx(min(float(r["best_val_loss"]) for r in rows if r["best_val_loss"]))
    assert b["best_val_loss"] < math.log(token_data(cfg.data, search_preset(cfg)).vocab_size)  # beats a uniform guess
    assert math.isfinite(b["inference_tokens_per_s"]) and b["inference_tokens_per_s"] > 0  # a timing: no exact value
    assert summary["compute"]["full_trainings"] == 8 and summary["compute"]["early_trainings"] == 10
    doc = json.loads((cfg.out_dir / "predictor_0.json").read_text())
    from primitives.export import load_predictor
    pred = load_predictor(doc)
    assert pred.features  # the formula names the features it needs
    ck = json.loads((cfg.out_dir / "checkpoint.json").read_text())
    assert ck["format"] == "dimorph-checkpoint" and len(ck["males"]) == 4 and len(ck["females"]) == 12
    assert len(ck["logbook"]) == 3 and ck["run_id"] == summary["mlflow"]["run_id"]
    # only the best architecture's state is kept; spent early states are gone
    assert [p.name for p in (cfg.out_dir / "states").iterdir()] == [Path(ck["best"]["state"]).name]


@pytest.mark.slow
def test_same_seed_same_result_and_resume_replays(combined, tmp_path, shakespeare_path):
    cfg, summary = combined
    again = main(fast_config(tmp_path, shakespeare_path, gens=2))
    assert outcome(again, tmp_path / "out") == outcome(summary, cfg.out_dir)
    # resuming a finished search retrains nothing and logs nothing new (the journal grows on any new work)
    n_before = len((tmp_path / "out" / "journal.jsonl").read_text().splitlines())
    resumed = main(fast_config(tmp_path, shakespeare_path, gens=2, resume=True))
    assert outcome(resumed, tmp_path / "out") == outcome(summary, cfg.out_dir)
    assert len((tmp_path / "out" / "journal.jsonl").read_text().splitlines()) == n_before


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(combined, tmp_path, shakespeare_path):
    cfg, summary = combined
    args = ["--gens", "2", "--full-steps", "30", "--early-frac", "0.2", "--bootstrap", "4", "--males", "4",
            "--females", "12", "--offspring", "3", "--promote", "1", "--promote-random", "1",
            "--pred-steps", "2", "--inference-samples", "1", "--inference-tokens", "8", "--no-progress",
            "--start", "full", "--out", str(tmp_path / "out"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--data", str(shakespeare_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "evo.run", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = tmp_path / "out" / "journal.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and sum(1 for ln in journal.read_text().splitlines() if '"eval/g1' in ln) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the search ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(ln)["id"] for ln in journal.read_text().splitlines() if ln.endswith("}")]
    cfg2 = parse_config(args + ["--resume"])
    resumed = main(cfg2)
    after = [json.loads(ln)["id"] for ln in journal.read_text().splitlines()]
    assert after[: len(before)] == before and len(after) == len(set(after))  # nothing finished is redone
    assert outcome(resumed, tmp_path / "out") == outcome(summary, cfg.out_dir)
    client = MlflowClient(cfg2.tracking_uri)
    run = client.get_run(resumed["mlflow"]["run_id"])
    kids = children_of(client, run.info.run_id, run.info.experiment_id)
    assert len(kids) == 10 and len({k.data.tags["dimorph.eval_key"] for k in kids}) == 10


@pytest.mark.slow
@pytest.mark.parametrize("mode,full,early", [("male", 6, 7), ("female", 6, 7), ("baseline", 1, 0)])
def test_modes_run(mode, full, early, tmp_path, shakespeare_path):
    s = main(fast_config(tmp_path, shakespeare_path, gens=1, mode=mode))
    assert s["compute"]["full_trainings"] == full and s["compute"]["early_trainings"] == early
    assert s["best"]["best_val_loss"] < 4.5
    assert (s["predictor"] is not None) == (mode == "female")
    if mode == "baseline":
        assert s["best"]["genes"]["n_layer"] == 2 and s["best"]["key"] == "baseline"


def test_ctrl_c_saves_checkpoint_and_marks_killed(tmp_path, shakespeare_path, monkeypatch):
    import evo.executors
    real = evo.executors.SerialExecutor.run
    seen = []

    def interrupted(self, tasks):
        for res in real(self, tasks):
            seen.append(res["key"])
            if len(seen) == 3:
                raise KeyboardInterrupt
            yield res

    monkeypatch.setattr(evo.executors.SerialExecutor, "run", interrupted)
    cfg = fast_config(tmp_path, shakespeare_path, gens=1)
    with pytest.raises(SystemExit) as e:
        main(cfg)
    assert e.value.code == 130
    ck = json.loads((cfg.out_dir / "checkpoint.json").read_text())
    assert MlflowClient(cfg.tracking_uri).get_run(ck["run_id"]).info.status == "KILLED"
    assert sum(1 for ln in (cfg.out_dir / "journal.jsonl").read_text().splitlines() if '"eval/' in ln) == 2


def test_bad_cli_values_fail_before_training(capsys):
    for argv, needle in [(["--gens", "-1"], "gens must be >= 0, got -1"),
                         (["--mode", "female2"], "female2"), (["--preset", "huge"], "huge"),
                         (["--promote", "5", "--offspring", "3"], "offspring (3)"),
                         (["--early-frac", "1.5"], "1.5"), (["--data", "/nope.txt"], "/nope.txt"),
                         (["--gens", "two"], "two")]:
        with pytest.raises(SystemExit) as e:
            parse_config(argv)
        assert e.value.code == 2
        assert needle in capsys.readouterr().err


def test_foreign_or_corrupt_checkpoint_is_refused(tmp_path, shakespeare_path):
    from evo.checkpoint import CheckpointError
    cfg = fast_config(tmp_path, shakespeare_path, gens=1, resume=True)
    cfg.out_dir.mkdir(parents=True)
    (cfg.out_dir / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        main(cfg)
    (cfg.out_dir / "checkpoint.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a Dimorph checkpoint"):
        main(cfg)
    other = {"format": "dimorph-checkpoint", "version": 1, "search": {"seed": 99}}
    (cfg.out_dir / "checkpoint.json").write_text(json.dumps(other))
    with pytest.raises(CheckpointError, match="different search"):
        main(cfg)
    assert sorted(p.name for p in cfg.out_dir.iterdir()) == ["checkpoint.json"]  # nothing touched
    fresh = fast_config(tmp_path, shakespeare_path, gens=1)
    with pytest.raises(CheckpointError, match="--resume"):
        main(fresh)


def test_export_from_checkpoint_and_run_id(combined, tmp_path, capsys):
    from evo.export import main as export_main
    from primitives.export import load_predictor
    cfg, summary = combined
    assert export_main(["--checkpoint", str(cfg.out_dir), "--top", "2", "--out", str(tmp_path / "a")]) == 0
    docs = [json.loads((tmp_path / "a" / f"predictor_{i}.json").read_text()) for i in range(2)]
    assert docs[0]["tree"] == summary["predictor"]["tree"]  # re-scoring finds the same champion
    assert export_main(["--run-id", summary["mlflow"]["run_id"], "--tracking-uri", cfg.tracking_uri,
                        "--out", str(tmp_path / "b")]) == 0
    logged = json.loads((tmp_path / "b" / "predictor_0.json").read_text())
    assert logged["tree"] == docs[0]["tree"] and logged["sympy"] == docs[0]["sympy"]
    pred = load_predictor(tmp_path / "b" / "predictor_0.json")
    feats = {f: 1.0 + 0.1 * i for i, f in enumerate(pred.features)}
    assert pred(feats) == pytest.approx(load_predictor(docs[0])(feats), rel=1e-12)
    assert "sympy:" in capsys.readouterr().out
    assert export_main(["--checkpoint", str(cfg.out_dir), "--front", "--out", str(tmp_path / "c")]) == 0
    front = json.loads((tmp_path / "c" / "front.json").read_text())
    sizes, taus = [d["meta"]["size"] for d in front], [d["meta"]["kendall_tau"] for d in front]
    assert sizes == sorted(sizes) and taus == sorted(taus) and len(set(sizes)) == len(sizes)
    assert [d["meta"]["default"] for d in front] == [d["tree"] == docs[0]["tree"] for d in front]
    assert "front (" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        export_main(["--run-id", summary["mlflow"]["run_id"], "--front"])
    assert exc.value.code == 2 and "--front needs --checkpoint" in capsys.readouterr().err
    assert export_main(["--checkpoint", str(tmp_path / "missing")]) == 2


@pytest.mark.slow
def test_against_a_real_mlflow_server(tmp_path, shakespeare_path):
    import socket
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"]
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline, up = time.time() + 90, False
        while time.time() < deadline and server.poll() is None and not up:
            try:
                up = urllib.request.urlopen(uri + "/health", timeout=2).status == 200
            except OSError:
                time.sleep(0.5)
        if not up:
            pytest.skip(f"mlflow server did not start on 127.0.0.1:{port}: "
                        f"{(tmp_path / 'server.log').read_text()[-500:]}")
        cfg = fast_config(tmp_path, shakespeare_path, gens=1, tracking_uri=uri)
        summary = main(cfg)
        client = MlflowClient(uri)
        parent = client.get_run(summary["mlflow"]["run_id"])
        assert parent.info.status == "FINISHED" and parent.data.params["mode"] == "combined"
        assert [m.step for m in client.get_metric_history(parent.info.run_id, "search/best_val_loss")] == [0, 1]
        kids = children_of(client, parent.info.run_id, parent.info.experiment_id)
        assert len(kids) == 4 + 3
        assert {"results.csv", "summary.json", "predictors"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert list((tmp_path / "server-artifacts").rglob("results.csv"))  # stored by the server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
