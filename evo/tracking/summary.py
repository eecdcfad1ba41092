"""A finished search's result as the parent run holds it (final/* metrics, tags, the description)
and as evo.run prints it: summary_lines writes the text of both."""
from __future__ import annotations

import json
from pathlib import Path

from evo.tracking.store import MAX_TAG_VALUE, _finite


def final_metrics(summary: dict) -> dict:
    """The parent's final/* metrics from a search summary (evo.run's or a peer search's layout)."""
    b, p = summary.get("best") or {}, summary.get("predictor") or {}
    out = {"final/best_val_loss": b.get("best_val_loss"), "final/best_final_val_loss": b.get("final_val_loss"),
           "final/best_final_train_loss": b.get("final_train_loss"), "final/best_n_params": b.get("n_params"),
           "final/best_train_time_s": b.get("train_time_s"),
           "final/inference_tokens_per_s": b.get("inference_tokens_per_s"),
           "final/inference_tokens_per_s_no_cache": b.get("inference_tokens_per_s_no_cache"),
           "final/baseline_best_val_loss": summary.get("baseline_best_val_loss"),
           "final/predictor_fit_tau": p.get("fit_kendall_tau"), "final/predictor_holdout_tau": p.get("holdout_kendall_tau"),
           "final/archive_size": summary.get("archive_size"),
           "final/wall_s": (summary.get("timing") or {}).get("search_wall_s")}
    out.update({f"final/{'eval_seconds' if k == 'seconds' else k}": v for k, v in (summary.get("compute") or {}).items()})
    return out


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


def describe(summary: dict) -> str:
    """The parent run's description (Markdown): what ran, the best architecture, formula, cost, model."""
    return "\n".join(summary_lines(summary, markdown=True)) + "\n"


def summary_lines(s: dict, markdown: bool = False, run_lines=()) -> list[str]:
    """A search's result in words, one fact a line: what ran, the best architecture (or that none
    finished), the baseline's loss, the best predictor, the compute, then `run_lines` (the caller's
    own, e.g. where to see the run), then the model. Plain text (the end of evo.run), or Markdown
    (the parent run's description: a list, names and commands as code, with the best child's run id
    and the number of generations)."""
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
        child = f" (child run {code(b['run_id'])})" if markdown and b.get("run_id") else ""
        speed, plain = (b.get(k) for k in ("inference_tokens_per_s", "inference_tokens_per_s_no_cache"))
        infer = (f"inference {speed:.0f} tok/s with KV cache, {_num(plain, 0)} without" if _finite(speed)
                 else "inference not measured (no model: a table lookup)")
        lines += [fact(f"best architecture {code(b['key'])}{child}: {genes} ({_count(b.get('n_params'))} params)"),
                  f"  final train loss {_num(b.get('final_train_loss'))} | best val loss "
                  f"{strong(_num(b.get('best_val_loss')))} (step {b.get('best_val_step')}) | train time "
                  f"{_num(b.get('train_time_s'), 1)} s | {infer}"]
    else:
        lines.append(fact("no architecture finished training (all diverged or failed)"))
    base = s.get("baseline_best_val_loss")
    if _finite(base) and s.get("mode") != "baseline":
        lines.append(fact(f"the preset's baseline architecture, same budget: best val loss {base:.4f}", "  "))
    if p:
        held = strong(f"{_num(p.get('holdout_kendall_tau'), 3)} held out")
        lines.append(fact(f"best predictor (Kendall tau {_num(p.get('fit_kendall_tau'), 3)} on the archive, "
                          f"{held}): {code(p['sympy'])}"))
    if c:
        runs = (f"{c.get('full_trainings', 0)} full and {c['early_trainings']} early trainings" if "early_trainings" in c
                else f"{c.get('trainings', 0)} trainings, {c.get('full_trainings', 0)} to the full budget")
        lines.append(fact(f"compute: {c.get('flops', 0):.3g} training FLOPs, {c.get('seconds', 0):.0f} s in "
                          f"evaluations; {runs}"))
    lines += list(run_lines)
    m = s.get("mlflow") or {}
    if m.get("model_uri"):
        store = "" if default_store(m.get("tracking_uri")) else f" --tracking-uri {m['tracking_uri']}"
        sample = f"python -m evo.sample --run-id {m.get('run_id')}{store}"
        lines.append(fact(f"best model {code(m['model_uri'])}: {code(sample)}"))
    elif m.get("model_note"):
        lines.append(fact(f"no model logged: {m['model_note']}"))
    return lines


def default_store(uri: str | None) -> bool:
    """Whether `uri` is the store MLflow tools use by default from here (./mlflow.db)."""
    return uri == f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _num(x, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "n/a"


def _count(x) -> str:
    """A count with thousands separators (n/a when there is none)."""
    return f"{int(x):,}" if _finite(x) else "n/a"
