"""A finished search's result as the parent run holds it (final/* metrics, tags, the description)
and as evo.run prints it: summary_lines writes the text of both. Also each child run's description
(child_description): its search, its parents and its female, as links and formulas."""
from __future__ import annotations

import json
from pathlib import Path

from evo.tracking.store import MAX_TAG_VALUE, _finite, run_page


def final_metrics(summary: dict) -> dict:
    """The parent's final/* metrics from a search summary (evo.run's or a peer search's layout)."""
    b, p = summary.get("best") or {}, summary.get("predictor") or {}
    out = {"final/best_val_loss": b.get("best_val_loss"), "final/best_final_val_loss": b.get("final_val_loss"),
           "final/best_final_train_loss": b.get("final_train_loss"), "final/best_n_params": b.get("n_params"),
           "final/best_train_time_s": b.get("train_time_s"),
           "final/inference_tokens_per_s": b.get("inference_tokens_per_s"),
           "final/inference_tokens_per_s_no_cache": b.get("inference_tokens_per_s_no_cache"),
           "final/inference_tokens_per_s_std": b.get("inference_tokens_per_s_std"),
           "final/inference_tokens_per_s_no_cache_std": b.get("inference_tokens_per_s_no_cache_std"),
           "final/baseline_best_val_loss": summary.get("baseline_best_val_loss"),
           "final/predictor_fit_tau": p.get("fit_kendall_tau"), "final/predictor_holdout_tau": p.get("holdout_kendall_tau"),
           "final/predictor_holdout_n": p.get("holdout_n"),
           "final/predictor_holdout_tau_ci_low": (p.get("holdout_ci") or [None, None])[0],
           "final/predictor_holdout_tau_ci_high": (p.get("holdout_ci") or [None, None])[1],
           "final/archive_size": summary.get("archive_size"),
           "final/wall_s": (summary.get("timing") or {}).get("search_wall_s")}
    margin = baseline_margin(summary)
    if margin is not None:
        out["final/margin_vs_baseline"], out["final/margin_vs_baseline_pct"] = margin
    out.update({f"final/{'eval_seconds' if k == 'seconds' else k}": v for k, v in (summary.get("compute") or {}).items()})
    return out


def baseline_margin(summary: dict) -> tuple[float, float | None] | None:
    """How much lower the best architecture's best val loss is than the preset's baseline's (both
    trained to the same budget): (baseline minus best, that as a percent of the baseline's; None
    for a baseline loss of 0); None unless both losses are known and finite. Negative: worse."""
    best, base = (summary.get("best") or {}).get("best_val_loss"), summary.get("baseline_best_val_loss")
    if not (_finite(best) and _finite(base)):
        return None
    margin = float(base) - float(best)
    return margin, (100 * margin / float(base) if base else None)


def final_tags(summary: dict) -> dict:
    """The parent's tags naming the result: the best child (key, run id, genes), the best formula."""
    b, p = summary.get("best") or {}, summary.get("predictor") or {}
    tags = {}
    if b:
        tags.update({"dimorph.best_key": b.get("key"), "dimorph.best_run_id": b.get("run_id") or "",
                     "dimorph.best_genes": json.dumps(b.get("genes"))})
    if p:
        tags.update({"dimorph.best_formula": str(p.get("sympy"))[:MAX_TAG_VALUE],
                     "dimorph.best_formula_tree": str(p.get("tree"))[:MAX_TAG_VALUE]})
    return tags


FLOPS = "training FLOPs"  # the cost unit of a search that trains the GPT

FIGURE_TITLES = {"parallel_coordinates.png": "Genes to loss, every evaluation",
                 "importance.png": "Which genes matter (fANOVA)",
                 "pareto.png": "Combined mode's two objectives: early loss, final loss (true or predicted)",
                 "lineage.png": "Lineage: parents to children"}


def headline(summary: dict) -> str | None:
    """The answer in one line (Markdown): which architecture won, by how much over the baseline, at
    what cost; None when none finished training."""
    b, c = summary.get("best") or {}, summary.get("compute") or {}
    if not b.get("key"):
        return None
    margin = baseline_margin(summary)
    by = "no baseline to compare with" if margin is None else (
        f"{abs(margin[0]):.4f}" + (f" ({abs(margin[1]):.1f}%)" if margin[1] is not None else "")
        + (" better than" if margin[0] > 0 else " worse than" if margin[0] < 0 else " the same as") + " the baseline")
    unit = summary.get("cost_unit", FLOPS)
    cost = ("cost not recorded" if not _finite(c.get("flops")) else f"{c['flops'] / 1e9:,.0f} GFLOPs"
            if unit == FLOPS else f"{c['flops']:,.0f} {unit}")
    if _finite(c.get("full_trainings")):
        cost += f" ({int(c['full_trainings'])} full trainings)"
    return f"**Winner `{b['key']}`: best val loss {_num(b.get('best_val_loss'))}, {by}, for {cost}.**"


def describe(summary: dict) -> str:
    """The parent run's description (Markdown): the answer in one line (headline: it shows while
    MLflow folds the rest), what ran, the best architecture, formula, cost, model, then the
    search's figures (artifacts under figures/): each linked to its artifact page and shown."""
    top = headline(summary)
    text = (f"{top}\n\n" if top else "") + "\n".join(summary_lines(summary, markdown=True)) + "\n"
    m = summary.get("mlflow") or {}
    figures = summary.get("figures") or []
    if m.get("run_id") and figures:
        text += "\n### Figures (the run's artifacts, folder `figures/`)\n"
        for path in figures:
            title = FIGURE_TITLES.get(path.rsplit("/", 1)[-1], path)
            page = f"{run_page(m.get('experiment_id') or '0', m['run_id'])}/artifacts/{path}"
            text += (f"\n[**{title}**]({page})\n\n"
                     f"![{title}](get-artifact?path={path.replace('/', '%2F')}&run_uuid={m['run_id']})\n")
    return text


def summary_lines(s: dict, markdown: bool = False, run_lines=()) -> list[str]:
    """A search's result in words, one fact a line: what ran, the best architecture (or that none
    finished; its inference speeds as mean ± std), the baseline's loss and the best's margin over
    it, the best predictor (its held-out tau with n and 95% interval, held_out), the compute, then
    `run_lines` (the caller's own, e.g. where to see the run), then the model and its name. Plain
    text (the end of evo.run), or Markdown (the parent run's description: a list, names and
    commands as code, with the best child's run linked and the number of generations). Losses are
    shown to 4 decimals, taus to 3."""
    def fact(text: str, indent: str = "") -> str:
        return f"- {text[0].upper()}{text[1:]}" if markdown else indent + text

    def code(x) -> str:
        return f"`{x}`" if markdown else str(x)

    def strong(x: str) -> str:
        return f"**{x}**" if markdown else x

    b, p, c = s.get("best") or {}, s.get("predictor"), s.get("compute") or {}
    title = f"Dimorph {s.get('mode')} search on {s.get('preset')} (seed {s.get('seed')})"
    if markdown:
        n = s.get("gens")
        gens = f", {n} generation{'' if n == 1 else 's'}" if n is not None else ""
        lines = [f"**{title}**{gens}.", ""]
    else:
        lines = [f"== {title} =="]
    if b:
        genes = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["genes"].items())
        child = ""
        if markdown and b.get("run_id"):
            exp = (s.get("mlflow") or {}).get("experiment_id")
            child = (f" (child run [{code(b['run_id'])}]({run_page(exp, b['run_id'])}))" if exp
                     else f" (child run {code(b['run_id'])})")
        infer = _inference(b, s.get("inference_note"))
        size = f" ({_count(b['n_params'])} params)" if b.get("n_params") is not None else ""
        lines += [fact(f"best architecture {code(b['key'])}{child}: {genes}{size}"),
                  f"  final train loss {_num(b.get('final_train_loss'))} | best val loss "
                  f"{strong(_num(b.get('best_val_loss')))} (step {b.get('best_val_step')}) | train time "
                  f"{_num(b.get('train_time_s'), 1)} s | {infer}"]
    else:
        lines.append(fact("no architecture finished training (all diverged or failed)"))
    base = s.get("baseline_best_val_loss")
    if _finite(base) and s.get("mode") != "baseline":
        margin = baseline_margin(s) if b else None
        than = ""
        if margin is not None:
            m, pct = margin
            if round(m, 4) == 0:
                than = "; the best is no better than the baseline"
            else:
                pct = f" ({abs(pct):.1f}%)" if _finite(pct) else ""
                than = f"; the best is {abs(m):.4f}{pct} {'better' if m > 0 else 'worse'} than the baseline"
        label = s.get("baseline_label", "the preset's baseline architecture")
        lines.append(fact(f"{label}, same budget: best val loss {base:.4f}{than}", "  "))
    if p:
        held = strong(held_out(p))
        lines.append(fact(f"best predictor (Kendall tau {_num(p.get('fit_kendall_tau'), 3)} on the archive, "
                          f"{held}): {code(p['sympy'])}"))
    if c:
        runs = (f"{c.get('full_trainings', 0)} full and {c['early_trainings']} early trainings" if "early_trainings" in c
                else f"{c.get('trainings', 0)} trainings, {c.get('full_trainings', 0)} to the full budget")
        unit = s.get("cost_unit", FLOPS)
        lines.append(fact(f"compute: {c.get('flops', 0):.3g} {unit}, {c.get('seconds', 0):.0f} s in "
                          f"evaluations; {runs}"))
    lines += list(run_lines)
    m = s.get("mlflow") or {}
    if m.get("model_uri"):
        store = "" if default_store(m.get("tracking_uri")) else f" --tracking-uri {m['tracking_uri']}"
        sample = f"python -m evo.sample --run-id {m.get('run_id')}{store}"
        name = f"{code(m['model_name'])} " if m.get("model_name") else ""
        lines.append(fact(f"best model {name}{code(m['model_uri'])}: {code(sample)}"))
    elif m.get("state_artifact"):  # a user objective: its best state, as the objective returned it
        lines.append(fact(f"best state (the objective's own model) {code(m['state_artifact'])} on the "
                          f"search's run: {m['model_note']}"))
    elif m.get("model_note"):
        lines.append(fact(f"no model logged: {m['model_note']}"))
    return lines


def child_description(key: str, experiment_id: str, search_run_id: str, search_name: str | None,
                      parents: list[tuple[str, str | None]], generation=None, method: str | None = None,
                      female: str | None = None, female_child: str | None = None) -> str:
    """A child run's description (Markdown): the evaluation and the search it belongs to, linked;
    its parents (evaluation key and run), each linked to its run where it has one; and the female
    of its mating and her predictor child, as formulas in full."""
    def link(text: str, run_id: str | None) -> str:
        return f"[{text}]({run_page(experiment_id, run_id)})" if run_id else text

    what = f"Evaluation `{key}`" + (f" ({method})" if method else "")
    gen = f", generation {generation}" if generation not in (None, "") else ""
    lines = [f"{what} of the Dimorph search {link(f'`{search_name or search_run_id}`', search_run_id)}{gen}.", ""]
    lines.append("- Parents: " + (", ".join(link(f"`{k}`", rid) for k, rid in parents) if parents else "none"))
    if female:
        lines.append(f"- Female of its mating: `{female}`")
    if female_child:
        lines.append(f"- Her predictor child: `{female_child}`")
    return "\n".join(lines) + "\n"


def held_out(p: dict) -> str:
    """The predictor's held-out Kendall tau in words, always with the number of held-out
    architectures it ranks and its 95% interval (`holdout_ci`), e.g. `0.600 held out (n=5, 95% CI
    -0.54..0.96)`; too few of them for an interval (n < 5), none, or an n not recorded say so."""
    tau, n, ci = p.get("holdout_kendall_tau"), p.get("holdout_n"), p.get("holdout_ci")
    if n is None:
        return f"{_num(tau, 3)} held out (n not recorded)"
    if not n or not _finite(tau):
        return f"{_num(tau, 3)} held out (n={n}: the archive was too small to hold any out)"
    if ci is None:
        return f"{_num(tau, 3)} held out (n={n}: too few for an interval)"
    return f"{_num(tau, 3)} held out (n={n}, 95% CI {ci[0]:.2f}..{ci[1]:.2f})"


def _inference(b: dict, note: str | None = None) -> str:
    """The inference speeds with and without the KV cache, each as mean ± standard deviation over
    the timed samples, and whether their ranges (slowest to fastest sample) overlap."""
    speed, plain = (b.get(k) for k in ("inference_tokens_per_s", "inference_tokens_per_s_no_cache"))
    if not _finite(speed):
        return note or "inference not measured (no model: a table lookup)"
    sd, sd_plain = (b.get(k) for k in ("inference_tokens_per_s_std", "inference_tokens_per_s_no_cache_std"))
    if not (_finite(sd) and _finite(sd_plain)):
        why = "1 sample each: no spread" if b.get("inference_samples") == 1 else "spread not recorded"
        return f"inference {speed:.0f} tok/s with KV cache, {_num(plain, 0)} without ({why})"
    lo, hi, lo_plain, hi_plain = (b.get(f"inference_tokens_per_s{k}") for k in ("_min", "_max", "_no_cache_min",
                                                                                 "_no_cache_max"))
    n = b.get("inference_samples")
    how = f"mean ± std of {n} samples" if n else "mean ± std"
    if all(_finite(x) for x in (lo, hi, lo_plain, hi_plain)) and lo <= hi_plain and lo_plain <= hi:
        how += "; their ranges overlap"
    return f"inference {speed:.0f} ± {sd:.0f} tok/s with KV cache, {plain:.0f} ± {sd_plain:.0f} without ({how})"


def default_store(uri: str | None) -> bool:
    """Whether `uri` is the store MLflow tools use by default from here (./mlflow.db)."""
    return uri == f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _num(x, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "n/a"


def _count(x) -> str:
    """A count with thousands separators (n/a when there is none)."""
    return f"{int(x):,}" if _finite(x) else "n/a"
