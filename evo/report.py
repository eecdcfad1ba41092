"""The end of a search: the best architecture's numbers, exported predictors, tables and plots."""
from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np


def best_numbers(search, measure: bool = True) -> dict:
    """The paper's four numbers for the best fully trained architecture (inference re-measured);
    {} when no architecture finished training."""
    rec = search.ledger.best()
    if rec is None:
        return {}
    full = rec.full
    out = {"key": rec.key, "genes": rec.genes, "run_id": rec.run_id,
           "final_train_loss": full.get("final_train_loss"), "best_val_loss": full.get("best_val_loss"),
           "best_val_step": full.get("best_val_step"), "final_val_loss": full.get("final_val_loss"),
           "train_time_s": full.get("wall_time"), "n_params": full.get("n_params"),
           "train_tokens_per_s": full.get("tokens_per_s")}
    if measure:
        out.update(measure_speed(search, rec, search.cfg.inference_samples, search.cfg.inference_tokens))
    return out


def measure_speed(search, rec, n_samples: int = 10, new_tokens: int = 500) -> dict:
    """Paper protocol: 10 samples x 500 tokens at batch 1, temperature 0.8, top-k 200; KV cache and none.
    Each is reported as the mean tokens/s of its samples (`inference_tokens_per_s`,
    `inference_tokens_per_s_no_cache`) with their spread: the sample standard deviation (`*_std`,
    None from one sample) and the slowest and fastest sample (`*_min`, `*_max`)."""
    import torch

    from evo.evaluate import token_data
    from models.inference import inference_rates
    from models.train import model_from_state

    data = token_data(search.cfg.data, search.preset)
    gpt_cfg, _ = search.preset.configs(rec.genes, data.vocab_size, device=search.cfg.device)
    torch.manual_seed(0)
    state = search.ledger.best_state
    model = model_from_state(gpt_cfg, state if state and Path(state).exists() else None)
    torch.set_num_threads(max(1, search.cfg.threads))
    kw = dict(n_samples=n_samples, new_tokens=new_tokens, device=search.cfg.device)
    out = {"inference_samples": n_samples}
    for name, cache in (("inference_tokens_per_s", True), ("inference_tokens_per_s_no_cache", False)):
        out.update(spread(name, inference_rates(model, use_cache=cache, **kw)))
    return out


def spread(name: str, values: list[float]) -> dict:
    """`name`: the mean of `values`; `name_std`: their sample standard deviation (None for one
    value); `name_min`, `name_max`: the smallest and largest."""
    import statistics

    return {name: statistics.fmean(values), f"{name}_std": statistics.stdev(values) if len(values) > 1 else None,
            f"{name}_min": min(values), f"{name}_max": max(values)}


def tau_interval(tau: float | None, n: int | None, level: float = 0.95) -> list[float] | None:
    """A `level` confidence interval [low, high] for a Kendall tau over n ranked points: Fisher's z
    on tau with the standard error sqrt(0.437 / (n - 4)) (Fieller, Hartley and Pearson 1957),
    clipped to [-1, 1]. None for n < 5 (too few) or no finite tau. A perfect tau (+-1), whose z is
    infinite, is transformed as if half a pair were discordant, and the bound on its side is tau."""
    if tau is None or not math.isfinite(tau) or n is None or n < 5:
        return None
    from statistics import NormalDist

    edge = 1 - 2 / (n * (n - 1))  # the tau of n points with half a pair (of n(n-1)/2) discordant
    z = math.atanh(max(-edge, min(edge, tau)))
    half = NormalDist().inv_cdf(0.5 + level / 2) * math.sqrt(0.437 / (n - 4))
    return [max(-1.0, min(math.tanh(z - half), tau)), min(1.0, max(math.tanh(z + half), tau))]


def results_table(search) -> str:
    """CSV of every evaluated architecture: genes, role, status (early, full, failed), early loss,
    prediction, true target, cost."""
    genes = list(search.preset.gene_names)
    cols = ["key", "generation", "role", "status", *genes, "n_params", "early_val_loss", "predicted",
            "best_val_loss", "final_val_loss", "final_train_loss", "flops", "seconds", "diverged", "error", "run_id"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for key, r in search.ledger.records.items():
        early, full = r.early or {}, r.full or {}
        last = full or early
        ev = (early.get("val_losses") or [None])[-1]
        w.writerow([key, r.generation, r.role, r.status, *[r.genes.get(g) for g in genes],
                    last.get("n_params"), ev, r.predicted, full.get("best_val_loss"),
                    full.get("final_val_loss"), full.get("final_train_loss"), last.get("flops"),
                    (early.get("eval_seconds") or 0) + (full.get("eval_seconds") or 0),
                    bool(last.get("diverged")), last.get("error") or "", r.run_id])
    return buf.getvalue()


def export_females(search, top: int = 3) -> list[dict]:
    """The champion and the next best females as export documents (sympy, LaTeX, JSON tree)."""
    from primitives.export import export_predictor

    if not search.fem or not search.fem.pop:
        return []
    champ = search.fem.champion()
    rest = [f for f in search.fem.ranked(search.fem.pop) if f is not champ][: top - 1]
    docs = []
    for rank, ind in enumerate([champ] + rest):
        meta = {"rank": rank, "fit_kendall_tau": ind.fitness.values[0],
                "holdout_kendall_tau": getattr(ind, "holdout_tau", None), "holdout_n": getattr(ind, "holdout_n", None),
                "archive_size": len(search.ledger.archive),
                "early_frac": search.E / search.F, "early_steps": search.E, "full_steps": search.F,
                "preset": search.preset.name, "target": "best validation loss over the full budget"}
        docs.append(export_predictor(ind, search.fem.pset, meta=meta))
    return docs


def plots(search, out_dir: Path) -> list[Path]:
    """best-so-far vs compute, predicted vs true, and the curves of fully trained architectures."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files, records = [], list(search.ledger.records.values())
    order = [r for r in records if _trained(r.full)]  # failed ones have no curves
    if order:
        flops, best, used, run = [], [], 0.0, math.inf
        for r in records:  # evaluation order
            used += ((r.result or {}).get("flops") or 0.0)
            if r.target is not None and math.isfinite(r.target):
                run = min(run, r.target)
            if math.isfinite(run):
                flops.append(used)
                best.append(run)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.step(flops, best, where="post")
        ax.set(xlabel="training FLOPs used", ylabel="best val loss so far", title=f"{search.cfg.mode}: search progress")
        files.append(_save(fig, out_dir / "best_vs_compute.png"))
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for r in order[:40]:
            f = r.full
            ax.plot(f["eval_steps"], f["val_losses"], lw=0.8, alpha=0.7)
        ax.axvline(search.E, color="k", ls=":", lw=0.8)
        ax.set(xlabel="step", ylabel="val loss", title="fully trained architectures")
        files.append(_save(fig, out_dir / "val_curves.png"))
    pts = [(r.predicted, r.target) for r in records
           if r.predicted is not None and r.target is not None and math.isfinite(r.target)]
    if pts and search.fem:
        p, t = np.array(pts).T
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(t, p, s=12)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], "k:", lw=0.8)
        ax.set(xlabel="true best val loss", ylabel="predicted (calibrated)", title="females' predictions")
        files.append(_save(fig, out_dir / "predicted_vs_true.png"))
    return files


def _trained(res: dict | None) -> bool:
    """A result with curves to show: not failed (error set, e.g. a killed worker) and evaluated."""
    return bool(res) and not res.get("error") and bool(res.get("eval_steps")) and bool(res.get("val_losses"))


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


def write_all(search, tracker, summary: dict) -> list[Path]:
    """Write artifacts to --out and to the MLflow parent run."""
    out = search.ckpt.dir
    files = []
    (out / "results.csv").write_text(results_table(search))
    files.append(out / "results.csv")
    for i, doc in enumerate(export_females(search)):
        stem = out / f"predictor_{i}"
        stem.with_suffix(".json").write_text(json.dumps(doc, indent=1))
        stem.with_suffix(".txt").write_text(f"{doc['sympy']}\n# tree: {doc['tree']}\n")
        stem.with_suffix(".tex").write_text(doc["latex"] + "\n")
        files += [stem.with_suffix(s) for s in (".json", ".txt", ".tex")]
    files += plots(search, out)
    figures = search_figures(search)
    summary["figures"] = [f"figures/{f.name}" for f in figures]  # shown in the parent's description
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    files.append(out / "summary.json")
    for f in files:
        tracker.log_artifact(f, "predictors" if f.name.startswith("predictor_") else None)
    for f in figures:
        tracker.log_artifact(f, "figures")
    return files + figures


def search_figures(search) -> list[Path]:
    """The search's own figures in --out/figures (evo.figures_search): parallel coordinates, gene
    importance, the Pareto front of combined mode's two objectives, the lineage."""
    from evo.figures_search import search_figures as draw

    rows = [{"key": r.key, "generation": r.generation, "role": r.role, "parents": list(r.parents), "genes": r.genes,
             "early": r.early_val, "final": r.target if r.fully_trained else None,
             "predicted": r.predicted} for r in search.ledger.records.values()]
    return draw(rows, list(search.preset.gene_names), search.ckpt.dir / "figures", seed=search.cfg.seed)


def log_best_model(search, tracker, best: dict) -> dict:
    """Log the best architecture, trained, as an MLflow PyTorch model on the parent run, named
    after the search (model_name; its GPTConfig and vocabulary with it): {"model_uri": ...,
    "model_name": ...}, or {"model_note": why none} when a table search has no model, nothing
    finished training, or the best state file is missing (reported on stderr; the search still
    finishes)."""
    import dataclasses
    import sys

    if search.cfg.table:
        return {"model_note": "a table search evaluates by lookup: no model exists"}
    from evo.space import trains_model

    entry = search.state().get("best") or {}
    if not best or entry.get("key") != best.get("key"):
        return {"model_note": "no architecture finished training"}
    path = entry.get("state")
    if not path or not Path(path).is_file():
        note = (f"the best architecture's trained state {path} is missing (deleted?)" if path
                else "the best architecture's trained state was not kept")
        print(f"warning: no model logged: {note}", file=sys.stderr)
        return {"model_note": note}
    if not trains_model(search.cfg):  # a user's model: its pickled state, as it is
        tracker.log_artifact(path, "best_state")
        where = f"best_state/{Path(path).name}"
        return {"model_note": "a pickle of {'state': what fn returned last, 'points': the curve}",
                "state_artifact": where}
    from evo.config import dataset_id
    from models.data import load_dataset
    from models.train import load_state, model_from_state

    ds = load_dataset(search.cfg.data)
    gpt_cfg, _ = search.preset.configs(best["genes"], ds.vocab_size)
    state = load_state(path)
    model = model_from_state(gpt_cfg, state)
    model.eval()
    meta = {"key": best["key"], "child_run_id": best.get("run_id"), "genes": best["genes"],
            "preset": search.preset.name, "steps": state.step, "best_val_loss": best.get("best_val_loss"),
            "final_val_loss": best.get("final_val_loss"), "data_sha256": dataset_id(search.cfg.data)}
    name = model_name(search.cfg)
    return {"model_uri": tracker.log_model(model, dataclasses.asdict(gpt_cfg), ds.chars, meta, step=search.cfg.gens,
                                           name=name), "model_name": name}


def model_name(cfg) -> str:
    """The name of a search's logged model, after the search: `dimorph-<mode>-<preset>-seed<seed>`
    (a character MLflow refuses in a model name, such as / or ., becomes -)."""
    return re.sub(r"""[/:.%"'\s]""", "-", f"dimorph-{cfg.mode}-{cfg.preset}-seed{cfg.seed}")
