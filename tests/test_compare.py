"""`python -m evo.compare`: two searches' decisions, and the environments they ran in."""
import json

from evo.compare import main
from evo.run import cli
from tests.table_helpers import make_table


def _run(table, out, seed=0):
    assert cli(["--table", str(table), "--gens", "2", "--out", str(out), "--no-progress", "--bootstrap", "4",
                "--males", "4", "--offspring", "3", "--females", "8", "--pred-steps", "1", "--seed", str(seed),
                "--tracking-uri", f"sqlite:///{out.parent / (out.name + '.db')}"]) == 0


def test_two_runs_of_one_seed_are_identical_and_another_seed_is_not(tmp_path, capsys):
    table = make_table(tmp_path / "t", n=30)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        _run(table, tmp_path / name, seed)
    env = json.loads((tmp_path / "a" / "summary.json").read_text())["environment"]
    assert env["torch_cpu_capability"] and env["torch"] and env["cpu"]
    capsys.readouterr()
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.strip() == "identical decisions"
    assert main([str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    out = capsys.readouterr().out
    assert "different searches: search.seed: 0 in A, 1 in B" in out and "first different decision:" in out
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    summary["environment"]["torch_cpu_capability"] = "AVX2"  # as a search on another processor records it
    (tmp_path / "b" / "summary.json").write_text(json.dumps(summary))
    doc = json.loads((tmp_path / "b" / "checkpoint.json").read_text())
    doc["archive"][0]["target"] += 1e-7  # and a loss that moved in the 7th digit
    (tmp_path / "b" / "checkpoint.json").write_text(json.dumps(doc))
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "first different decision: archive[0].target" in out
    assert f"torch_cpu_capability: {env['torch_cpu_capability']!r} vs 'AVX2'" in out
    assert main([str(tmp_path / "a"), str(tmp_path / "nothing")]) == 2
