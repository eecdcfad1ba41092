"""Every state of an output folder recovers (issue: journals survive torn writes, checkpoints are
rebuilt, a search refused at its start leaves nothing behind), shown on fast searches by lookup."""
import json
import os

import pytest

from evo.run import cli
from tests.table_helpers import make_table


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return str(make_table(tmp_path_factory.mktemp("t"), n=30))


_TEMPLATE: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _template_store(tmp_path_factory):
    """An empty MLflow sqlite store made once and copied for each search (migrations take seconds)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    _TEMPLATE["db"] = path


def _argv(table, out, gens=2, *extra):
    db = out.parent / (out.name + ".db")
    if not db.exists() and "db" in _TEMPLATE:
        db.parent.mkdir(parents=True, exist_ok=True)
        db.write_bytes(_TEMPLATE["db"].read_bytes())
    return ["--table", table, "--gens", str(gens), "--out", str(out), "--no-progress", "--bootstrap", "4",
            "--males", "4", "--offspring", "3", "--females", "8", "--pred-steps", "1",
            "--tracking-uri", f"sqlite:///{out.parent / (out.name + '.db')}", *extra]


def _state(out):
    doc = json.loads((out / "checkpoint.json").read_text())
    return {k: doc[k] for k in ("males", "females", "archive", "history")} | {
        "compute": {k: v for k, v in doc["compute"].items() if k != "seconds"},
        "best": {k: v for k, v in doc["best"].items() if k not in ("run_id", "state")}}


@pytest.fixture(scope="module")
def whole(table, tmp_path_factory):
    """The uninterrupted searches of 2 and 3 generations."""
    tmp = tmp_path_factory.mktemp("whole")
    out = {}
    for g in (2, 3):
        assert cli(_argv(table, tmp / f"g{g}", g)) == 0
        out[g] = _state(tmp / f"g{g}")
    return out


def test_a_journal_without_its_last_newline_resumes_and_extends_twice(table, whole, tmp_path):
    out = tmp_path / "out"
    assert cli(_argv(table, out, 2)) == 0
    j = out / "journal.jsonl"
    j.write_text(j.read_text().rstrip("\n"))  # the last entry is whole, its newline never written
    assert cli(_argv(table, out, 3, "--resume")) == 0
    assert _state(out) == whole[3]
    assert all(json.loads(line) for line in j.read_text().splitlines())  # one entry a line, none glued
    assert cli(_argv(table, out, 3, "--resume")) == 0 and _state(out) == whole[3]


@pytest.mark.parametrize("cut", [0.3, 0.7])
def test_a_journal_cut_mid_line_resumes_to_the_uninterrupted_result(table, whole, tmp_path, cut):
    out = tmp_path / "out"
    assert cli(_argv(table, out, 2)) == 0
    j = out / "journal.jsonl"
    data = j.read_bytes()
    at = int(len(data) * cut)
    assert data[at - 1:at] != b"\n"
    j.write_bytes(data[:at])  # a write torn at a random byte
    assert cli(_argv(table, out, 2, "--resume")) == 0
    assert _state(out) == whole[2]


def test_an_unreadable_checkpoint_is_rebuilt_from_the_journal(table, whole, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(_argv(table, out, 2)) == 0
    (out / "checkpoint.json").write_bytes(os.urandom(300))
    capsys.readouterr()
    assert cli(_argv(table, out, 3, "--resume")) == 0
    assert "is unreadable" in capsys.readouterr().err and _state(out) == whole[3]
    (out / "checkpoint.json").write_text('{"format": "dimorph-checkpoint", "ver')  # half written
    assert cli(_argv(table, out, 3, "--resume")) == 0 and _state(out) == whole[3]


def test_an_unreadable_checkpoint_without_the_settings_in_the_journal_is_one_line(table, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(_argv(table, out, 1)) == 0
    j = out / "journal.jsonl"
    j.write_text("".join(line + "\n" for line in j.read_text().splitlines() if '"id": "meta"' not in line))
    (out / "checkpoint.json").write_bytes(bytes(range(256)))
    capsys.readouterr()
    assert cli(_argv(table, out, 1, "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"corrupt checkpoint {out / 'checkpoint.json'}" in err[0] and "new --out" in err[0]


def test_a_journal_entry_of_the_wrong_shape_is_one_line_naming_it(table, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(_argv(table, out, 1)) == 0
    j = out / "journal.jsonl"
    lines = j.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if json.loads(line)["id"] == "eval/g0-b1")
    lines[k] = json.dumps({"id": "eval/g0-b1", "value": 7})
    j.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert cli(_argv(table, out, 2, "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eval/g0-b1 is not an evaluation result" in err[0]
    lines[k] = "[1, 2]"
    j.write_text("\n".join(lines) + "\n")
    assert cli(_argv(table, out, 2, "--resume")) == 2
    assert f"corrupt journal {j} at line {k + 1}" in capsys.readouterr().err


def test_a_search_refused_at_its_start_leaves_the_folder_free(table, tmp_path, capsys):
    other = make_table(tmp_path / "other", n=10, full=50, early=5)  # budgets that do not match
    out = tmp_path / "out"
    assert cli(_argv(table, out, 1, "--mode", "female", "--warm-start", str(other))) == 2
    assert "budget" in capsys.readouterr().err
    assert not (out / "checkpoint.json").exists() and not (out / "journal.jsonl").exists()
    assert cli(_argv(table, out, 1, "--mode", "female")) == 0  # no --resume needed, nothing in the way


def test_a_store_file_that_is_no_database_is_one_line(table, tmp_path, capsys):
    bad = tmp_path / "mlflow.db"
    bad.write_bytes(os.urandom(5000))
    assert cli(_argv(table, tmp_path / "out", 1, "--tracking-uri", f"sqlite:///{bad}")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == (f"error: cannot open the MLflow store sqlite:///{bad}: file is not a database; "
                                        f"move the file away (a new store is made) or point --tracking-uri at "
                                        f"another one")


def test_a_parent_run_deleted_in_mlflow_is_one_line_on_resume_and_restoring_it_resumes(table, whole, tmp_path,
                                                                                       capsys):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "out"
    assert cli(_argv(table, out, 2)) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'out.db'}")
    run_id = json.loads((out / "checkpoint.json").read_text())["run_id"]
    client.delete_run(run_id)
    capsys.readouterr()
    assert cli(_argv(table, out, 3, "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"run {run_id} was deleted" in err[0] and "mlflow runs restore" in err[0]
    client.restore_run(run_id)
    assert cli(_argv(table, out, 3, "--resume")) == 0 and _state(out) == whole[3]


@pytest.mark.parametrize("code", ["ENOSPC", "EACCES"])
def test_a_journal_write_that_fails_stops_with_one_line_and_resumes(table, whole, tmp_path, capsys, monkeypatch,
                                                                    code):
    import builtins
    import errno

    real, writes = builtins.open, []

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, text):
            writes.append(text)
            if len(writes) == 9:  # half a line reaches the disk, then the disk is full (or read-only)
                self.fh.write(text[: len(text) // 2])
                self.fh.flush()
                raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))
            return self.fh.write(text)

        def __getattr__(self, name):
            return getattr(self.fh, name)

    def faulty_open(file, mode="r", *a, **k):
        fh = real(file, mode, *a, **k)
        return Full(fh) if "a" in mode and str(file).endswith("journal.jsonl") else fh

    out = tmp_path / "out"
    monkeypatch.setattr(builtins, "open", faulty_open)
    assert cli(_argv(table, out, 2)) == 2
    monkeypatch.setattr(builtins, "open", real)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if " INFO mlflow" not in line]
    assert len(err) == 1 and err[0].startswith(f"error: cannot write {out / 'journal.jsonl'} ({os.strerror(getattr(errno, code))})")
    assert cli(_argv(table, out, 2, "--resume")) == 0 and _state(out) == whole[2]
