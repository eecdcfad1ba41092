"""Progress off a terminal: one plain line per generation on stdout, no bars, no \\r, no escape codes."""
import io
import re

from evo.config import Config
from evo.run import _Bars
from engine_helpers import fast_config

LINE = re.compile(r"generation (\d+)/(\d+): best val loss (\S+)( \| champion tau (\S+))? \| "
                  r"(\S+) FLOPs \| (\d+) s elapsed")


def row(best, flops, tau=None):
    r = {"arch/best_val_loss": best, "archive/size": 4, "cost/flops": flops, "cost/seconds": 1.0,
         "cost/full_trainings": 4, "cost/early_trainings": 0}
    if tau is not None:
        r.update({"pred/kendall_tau": tau, "pred/holdout_tau": 0.5, "pred/size": 3})
    return r


def test_plain_line_per_generation_off_a_terminal(capsys):
    bars = _Bars(Config(gens=2), True)
    bars.on_eval({"key": "g0-b0"})
    bars.on_generation(0, row(2.75081, 1.5e12))
    bars.on_eval({"key": "g1-c0"})
    bars.on_generation(1, row(2.62664, 3.14159e12, tau=0.6289))
    bars.on_generation(2, row(float("inf"), 4e12, tau=-0.25))
    bars.close()
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [re.sub(r"\d+ s elapsed", "N s elapsed", x) for x in lines] == [
        "generation 0/2: best val loss 2.7508 | 1.5e+12 FLOPs | N s elapsed",
        "generation 1/2: best val loss 2.6266 | champion tau 0.629 | 3.14e+12 FLOPs | N s elapsed",
        "generation 2/2: best val loss inf | champion tau -0.250 | 4e+12 FLOPs | N s elapsed",
    ]
    assert all(LINE.fullmatch(x) for x in lines)
    assert err == ""  # no bars


def test_elapsed_seconds_count_from_the_start(capsys, monkeypatch):
    clock = iter([100.0, 163.4])
    monkeypatch.setattr("evo.run.time.perf_counter", lambda: next(clock, 1e9))
    bars = _Bars(Config(gens=1, mode="male"), True)
    bars.on_generation(0, row(3.0, 1e9))
    assert capsys.readouterr().out == "generation 0/1: best val loss 3.0000 | 1e+09 FLOPs | 63 s elapsed\n"


def test_silent_with_no_progress(capsys):
    bars = _Bars(Config(gens=2), False)
    bars.on_eval({"key": "g0-b0"})
    bars.on_generation(0, row(2.7, 1e12))
    bars.close()
    assert capsys.readouterr() == ("", "")


def test_bars_on_a_terminal(monkeypatch, capsys):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr("sys.stdout", term)
    bars = _Bars(Config(gens=2), True)
    assert bars.gen is not None and bars.plain is None
    bars.on_generation(0, row(2.7, 1e12))
    bars.close()
    assert "generation 0/2" not in term.getvalue()
    assert bars.gen.n == 1


def test_search_log_off_a_terminal(tmp_path, shakespeare_path, capsys):
    from evo.run import main

    main(fast_config(tmp_path, shakespeare_path, mode="baseline", gens=1, progress=True))
    out, err = capsys.readouterr()
    gen_lines = [x for x in out.splitlines() if x.startswith("generation ")]
    assert len(gen_lines) == 1
    m = LINE.fullmatch(gen_lines[0])
    assert m and m[1] == "0" and m[2] == "0" and float(m[3]) > 0 and float(m[6]) > 0
    for text in (out, err):
        assert "\r" not in text and "\x1b[" not in text
