"""Progress off a terminal: one plain line per generation on stdout, no bars, no \\r, no escape codes;
and the summary's words for the baseline margin, the held-out tau and the inference speeds."""
import io
import math
import re

import pytest

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


# -- the summary's words: the baseline margin, the held-out tau, the inference speeds ---------------

def result(**kw):
    """A search summary as evo.run makes it, with the fields the summary text reads."""
    best = {"key": "g1-c0", "genes": {"n_layer": 2}, "n_params": 1000, "final_train_loss": 2.0, "best_val_loss": 2.5,
            "best_val_step": 30, "train_time_s": 1.0, "inference_samples": 10,
            "inference_tokens_per_s": 633.2, "inference_tokens_per_s_std": 40.4, "inference_tokens_per_s_min": 570.0,
            "inference_tokens_per_s_max": 700.0, "inference_tokens_per_s_no_cache": 778.0,
            "inference_tokens_per_s_no_cache_std": 55.0, "inference_tokens_per_s_no_cache_min": 690.0,
            "inference_tokens_per_s_no_cache_max": 860.0}
    pred = {"tree": "v_last", "sympy": "v_last", "fit_kendall_tau": 0.7, "holdout_kendall_tau": 0.6, "holdout_n": 5,
            "holdout_ci": [-0.5388, 0.9632]}
    s = {"mode": "combined", "preset": "tiny", "seed": 0, "gens": 2, "best": best, "baseline_best_val_loss": 2.6,
         "predictor": pred, "compute": {}}
    for k, v in kw.items():
        (s["best"] if k in best else s["predictor"] if k in pred else s)[k] = v
    return s


def text(s, markdown=False):
    from evo.tracking import summary_lines
    return "\n".join(summary_lines(s, markdown=markdown))


def test_the_baseline_line_says_by_how_much_the_best_beats_it():
    from evo.tracking import baseline_margin, final_metrics

    s = result()
    assert baseline_margin(s) == pytest.approx((0.1, 100 * 0.1 / 2.6))
    m = final_metrics(s)
    assert m["final/margin_vs_baseline"] == pytest.approx(0.1)
    assert m["final/margin_vs_baseline_pct"] == pytest.approx(3.8461538)
    assert "  the preset's baseline architecture, same budget: best val loss 2.6000; the best is 0.1000 (3.8%) " \
           "better than the baseline" in text(s)
    assert "- The preset's baseline architecture, same budget: best val loss 2.6000; the best is 0.1000 (3.8%) " \
           "better than the baseline" in text(s, markdown=True)
    worse = result(baseline_best_val_loss=2.4)
    assert "best val loss 2.4000; the best is 0.1000 (4.2%) worse than the baseline" in text(worse)
    assert "best val loss 2.5000; the best is no better than the baseline" in text(result(baseline_best_val_loss=2.5))
    none = result(baseline_best_val_loss=None)
    assert baseline_margin(none) is None and "final/margin_vs_baseline" not in final_metrics(none)
    assert "baseline" not in text(none)


def test_the_held_out_tau_always_comes_with_its_n():
    assert "Kendall tau 0.700 on the archive, 0.600 held out (n=5, 95% CI -0.54..0.96)): v_last" in text(result())
    assert "**0.600 held out (n=5, 95% CI -0.54..0.96)**" in text(result(), markdown=True)
    few = result(holdout_kendall_tau=1.0, holdout_n=3, holdout_ci=None)
    assert "1.000 held out (n=3: too few for an interval)" in text(few)
    none = result(holdout_kendall_tau=float("nan"), holdout_n=0, holdout_ci=None)
    assert "n/a held out (n=0: the archive was too small to hold any out)" in text(none)
    old = result(holdout_n=None, holdout_ci=None)  # a summary written before n was kept
    assert "0.600 held out (n not recorded)" in text(old)


def test_the_held_out_interval_is_fishers_z_with_kendalls_standard_error():
    from evo.report import tau_interval

    # atanh(0.6) -/+ 1.96 * sqrt(0.437 / 1), back through tanh
    assert tau_interval(0.6, 5) == pytest.approx([-0.538830, 0.963228], abs=1e-6)
    assert tau_interval(0.3, 20) == pytest.approx([-0.014393, 0.560412], abs=1e-6)
    # a perfect tau: transformed as 1 - 1/10 (half of one of 10 pairs discordant), its own side kept at 1
    assert tau_interval(1.0, 5) == pytest.approx([math.tanh(math.atanh(0.9) - 1.959964 * math.sqrt(0.437)), 1.0])
    assert tau_interval(-1.0, 6)[0] == -1.0
    assert tau_interval(0.6, 4) is None and tau_interval(float("nan"), 9) is None and tau_interval(0.6, None) is None


def test_inference_speeds_are_printed_with_their_spread():
    assert ("inference 633 ± 40 tok/s with KV cache, 778 ± 55 without (mean ± std of 10 samples; their ranges "
            "overlap)") in text(result())
    apart = result(inference_tokens_per_s_no_cache=1500.0, inference_tokens_per_s_no_cache_min=1400.0,
                   inference_tokens_per_s_no_cache_max=1600.0)
    assert "inference 633 ± 40 tok/s with KV cache, 1500 ± 55 without (mean ± std of 10 samples)" in text(apart)
    one = result(inference_samples=1, inference_tokens_per_s_std=None, inference_tokens_per_s_no_cache_std=None)
    assert "inference 633 tok/s with KV cache, 778 without (1 sample each: no spread)" in text(one)
    from evo.tracking import final_metrics
    m = final_metrics(result())
    assert m["final/inference_tokens_per_s_std"] == 40.4 and m["final/inference_tokens_per_s_no_cache_std"] == 55.0


def test_every_timed_sample_is_kept_and_summarised(monkeypatch):
    import torch

    import models.inference
    from evo.report import spread
    from models.gpt import GPT, GPTConfig
    from models.inference import inference_rates, measure_inference

    torch.manual_seed(0)
    model = GPT(GPTConfig(16, 65, 1, 2, 16))
    ticks = iter([0.0, 0.5, 1.0, 1.25, 2.0, 2.4, 3.0, 3.5, 4.0, 4.25, 5.0, 5.4])  # 0.5 s, 0.25 s, 0.4 s, twice
    monkeypatch.setattr(models.inference.time, "perf_counter", lambda: next(ticks))
    rates = inference_rates(model, n_samples=3, new_tokens=20)
    assert rates == pytest.approx([40.0, 80.0, 50.0])
    assert measure_inference(model, n_samples=3, new_tokens=20) == pytest.approx(170 / 3)  # the mean, as before
    s = spread("inference_tokens_per_s", rates)
    assert s == pytest.approx({"inference_tokens_per_s": 170 / 3, "inference_tokens_per_s_std": math.sqrt(
        ((40 - 170 / 3) ** 2 + (80 - 170 / 3) ** 2 + (50 - 170 / 3) ** 2) / 2),
        "inference_tokens_per_s_min": 40.0, "inference_tokens_per_s_max": 80.0})
    assert spread("x", [7.0]) == {"x": 7.0, "x_std": None, "x_min": 7.0, "x_max": 7.0}


def test_the_description_leads_with_the_answer_and_shows_the_figures():
    from evo.tracking.summary import describe, headline

    s = {"mode": "male", "preset": "tiny", "seed": 0, "gens": 2,
         "best": {"key": "g2-c0", "best_val_loss": 3.22708, "genes": {"n_layer": 3}}, "baseline_best_val_loss": 3.50431,
         "compute": {"flops": 4.9535e10, "full_trainings": 8}, "mlflow": {"run_id": "abc", "experiment_id": "1"},
         "figures": ["figures/pareto.png", "figures/lineage.png"]}
    top = "**Winner `g2-c0`: best val loss 3.2271, 0.2772 (7.9%) better than the baseline, for 50 GFLOPs (8 full trainings).**"
    assert headline(s) == top
    note = describe(s)
    assert note.startswith(top + "\n\n")
    assert ("[**Combined mode's two objectives: early loss, final loss (true or predicted)**]"
            "(#/experiments/1/runs/abc/artifacts/figures/pareto.png)") in note
    assert "![Lineage: parents to children](get-artifact?path=figures%2Flineage.png&run_uuid=abc)" in note
    worse = {**s, "baseline_best_val_loss": 3.0}
    assert "0.2271 (7.6%) worse than the baseline" in headline(worse)
    assert headline({**s, "baseline_best_val_loss": None}).endswith("no baseline to compare with, for 50 GFLOPs (8 full trainings).**")
    assert headline({"best": {}}) is None and "Figures" not in describe({**s, "figures": []})


def test_summary_names_files_by_their_path_inside_the_search_folder(tmp_path):
    from evo.run import _relative

    assert _relative(str(tmp_path / "figures" / "lineage.png"), str(tmp_path)) == "figures/lineage.png"
    assert _relative(str(tmp_path / "results.csv"), str(tmp_path)) == "results.csv"
    assert _relative("/elsewhere/model.pt", str(tmp_path)) == "model.pt"  # outside: its name
