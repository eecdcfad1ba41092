"""`evo.bench build` recovers like a search: settings checked on resume, torn journal lines mended,
one build per folder, Ctrl-C is one line."""
import json

import pytest

from evo.bench import main
from evo.checkpoint import lock_folder
from evo.table import Table


def _argv(out, data, *extra):
    return ["build", "--n", "3", "--full-steps", "12", "--noise", "0", "--workers", "0", "--data", str(data),
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def whole(tmp_path_factory, shakespeare_path):
    out = tmp_path_factory.mktemp("whole") / "tab"
    assert main(_argv(out, shakespeare_path)) == 0
    return out


def _lines(out):
    return (out / "build.jsonl").read_text().splitlines()


def test_a_resumed_build_with_other_settings_is_refused(whole, tmp_path, shakespeare_path, capsys):
    out = tmp_path / "tab"
    out.mkdir()
    (out / "build.jsonl").write_text("".join(line + "\n" for line in _lines(whole)[:2]))
    (out / "build.json").write_text((whole / "build.json").read_text())
    capsys.readouterr()
    assert main(_argv(out, shakespeare_path, "--seed", "1")) == 2
    err = capsys.readouterr().err
    assert "holds a build with other settings" in err and "'seed': (0, 1)" in err
    assert main(_argv(out, shakespeare_path)[:-4] + ["--full-steps", "15", "--data", str(shakespeare_path),
                                                      "--out", str(out)]) == 2
    assert "'full_steps': (12, 15)" in capsys.readouterr().err
    assert not (out / "table.json").exists()
    assert main(_argv(out, shakespeare_path)) == 0  # with its own settings it resumes
    assert Table(out).targets.tolist() == Table(whole).targets.tolist()


def test_a_build_journal_from_before_the_settings_file_is_refused(whole, tmp_path, shakespeare_path, capsys):
    out = tmp_path / "tab"
    out.mkdir()
    (out / "build.jsonl").write_text("".join(line + "\n" for line in _lines(whole)[:2]))
    assert main(_argv(out, shakespeare_path)) == 2
    assert "no build.json" in capsys.readouterr().err


@pytest.mark.parametrize("cut", ["mid-line", "no-newline"])
def test_a_torn_journal_line_is_mended_and_the_build_equals_an_uninterrupted_one(whole, tmp_path,
                                                                                 shakespeare_path, cut):
    out = tmp_path / "tab"
    out.mkdir()
    lines = _lines(whole)[:2]
    text = lines[0] + "\n" + (lines[1][: len(lines[1]) // 2] if cut == "mid-line" else lines[1])
    (out / "build.jsonl").write_text(text)
    (out / "build.json").write_text((whole / "build.json").read_text())
    assert main(_argv(out, shakespeare_path)) == 0
    keys = [json.loads(line)["key"] for line in _lines(out)]  # every line one whole record
    assert sorted(keys) == ["a0", "a1", "a2"]
    assert Table(out).targets.tolist() == Table(whole).targets.tolist()
    assert main(_argv(out, shakespeare_path)) == 0  # and a later resume reads it again


def test_two_builds_on_one_folder_the_second_stops_at_once(tmp_path, shakespeare_path, capsys):
    out = tmp_path / "tab"
    out.mkdir()
    held = lock_folder(out, out / "build.lock", "build")
    try:
        assert main(_argv(out, shakespeare_path)) == 2
    finally:
        held.close()
    assert "is in use" in capsys.readouterr().err and not (out / "build.jsonl").exists()


def test_ctrl_c_in_a_build_is_one_line_and_keeps_what_finished(tmp_path, shakespeare_path, capsys, monkeypatch):
    import evo.executors

    real = evo.executors.default_fn()
    calls = []

    def stop_after_one(task):
        calls.append(task.key)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(evo.executors, "default_fn", lambda: stop_after_one)
    out = tmp_path / "tab"
    with pytest.raises(SystemExit) as e:
        main(_argv(out, shakespeare_path))
    assert e.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted: the finished trainings are journaled")
    assert [json.loads(line)["key"] for line in _lines(out)] == ["a0"]
