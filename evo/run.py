"""`python -m evo.run --gens 20`: argv -> Config -> seed_everything -> Tracker -> Search -> summary."""
from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

from evo.config import Config, parse_config


def seed_everything(seed: int) -> None:
    """Seed random (DEAP draws from it), numpy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _Bars:
    """Progress (silent with --no-progress): tqdm bars for generations and evaluations when stdout is
    a terminal; otherwise (a log file, a pipe) one plain line per generation on stdout, e.g.
    `generation 3/20: best val loss 2.6266 | champion tau 0.629 | 1.57e+13 FLOPs | 123 s elapsed`."""

    def __init__(self, cfg: Config, enabled: bool):
        self.gen = self.ev = self.plain = None
        self.t0 = time.perf_counter()
        self.last_gen = 0 if cfg.mode == "baseline" else cfg.gens
        self.cost_unit = "table cost units" if getattr(cfg, "table", None) else "FLOPs"
        if not enabled:
            return
        isatty = getattr(sys.stdout, "isatty", None)
        if not (isatty and isatty()):
            self.plain = sys.stdout
            return
        from tqdm.auto import tqdm
        self.gen = tqdm(total=self.last_gen + 1, desc="generations", unit="gen", position=0)
        self.ev = tqdm(desc="evaluations", unit="eval", position=1, leave=False)

    def on_eval(self, res: dict) -> None:
        if self.ev is not None:
            self.ev.update(1)
            self.ev.set_postfix_str(res["key"])

    def on_generation(self, g: int, row: dict) -> None:
        if self.plain is not None:
            parts = [f"generation {g}/{self.last_gen}: best val loss {row['arch/best_val_loss']:.4f}"]
            if "pred/kendall_tau" in row:
                parts.append(f"champion tau {row['pred/kendall_tau']:.3f}")
            parts += [f"{row['cost/flops']:.3g} {self.cost_unit}",
                      f"{time.perf_counter() - self.t0:.0f} s elapsed"]
            print(" | ".join(parts), file=self.plain, flush=True)
        if self.gen is not None:
            post = {"best": f"{row['arch/best_val_loss']:.4f}"}
            if "pred/kendall_tau" in row:
                post["tau"] = f"{row['pred/kendall_tau']:.2f}"
            self.gen.set_postfix(post)
            self.gen.update(1)

    def close(self) -> None:
        for b in (self.ev, self.gen):
            if b is not None:
                b.close()


def main(cfg: Config) -> dict:
    """Run (or resume) one search; returns the final summary."""
    from evo.engine import Search
    from evo.executors import make_executor
    from evo.report import best_numbers, write_all
    from evo.tracking import Tracker, killed_status

    t_start = time.perf_counter()
    seed_everything(cfg.seed)
    tracker = Tracker(cfg.tracking_uri, cfg.experiment)
    bars = _Bars(cfg, cfg.progress)
    with make_executor(cfg) as executor:
        search = Search(cfg, executor, tracker, on_eval=bars.on_eval, on_generation=bars.on_generation)
        params = {**dataclasses.asdict(cfg), **{f"preset.{k}": v for k, v in _preset_params(search.preset).items()}}
        search.ckpt.run_id = tracker.start_search(params, run_name=f"{cfg.mode}-{cfg.preset}-seed{cfg.seed}",
                                                  run_id=search.ckpt.run_id, tags={"dimorph.mode": cfg.mode})
        search.ckpt.snapshot(search.state())
        try:
            search.run()
        except KeyboardInterrupt:
            bars.close()
            search.ckpt.snapshot(search.state())
            tracker.finish(None, status=killed_status())
            print(f"\ninterrupted: checkpoint saved in {search.ckpt.dir}; continue with the same command "
                  f"plus --resume", file=sys.stderr)
            raise SystemExit(130)
        except BaseException:
            tracker.finish(None, status="FAILED")
            raise
        finally:
            bars.close()
            search.ckpt.close()

        def finish():
            t_inf = time.perf_counter()
            best = best_numbers(search, measure=not cfg.table)
            t_inf = time.perf_counter() - t_inf
            summary = _summary(search, tracker, best)
            wall = time.perf_counter() - t_start - t_inf
            summary["timing"] = {"search_wall_s": wall, "inference_measure_s": t_inf,
                                 "waiting_for_training_s": search.wait_s,
                                 "outside_training_frac": max(0.0, 1 - search.wait_s / wall)}
            summary["files"] = [str(p) for p in write_all(search, tracker, summary)]
            tracker.finish(summary)
            return summary

        summary = search.ckpt.once("finish", finish)
    print(format_summary(summary))
    return summary


def _preset_params(preset) -> dict:
    return {k: v for k, v in dataclasses.asdict(preset).items() if k not in ("space", "baseline")} | {
        "early_steps": preset.early_steps, "baseline": json.dumps(preset.baseline)}


def _summary(search, tracker, best: dict) -> dict:
    cfg = search.cfg
    champ = search.fem.champion() if search.fem and search.fem.pop else None
    pred = None
    if champ is not None:
        from primitives.export import to_sympy
        pred = {"tree": str(champ), "sympy": str(to_sympy(champ, search.fem.pset)),
                "fit_kendall_tau": champ.fitness.values[0], "holdout_kendall_tau": champ.holdout_tau}
    base = search.records.get("g0-b0") or search.records.get("baseline") or {}
    return {"mode": cfg.mode, "preset": cfg.preset, "seed": cfg.seed, "gens": cfg.gens,
            "best": best, "baseline_best_val_loss": base.get("target"), "predictor": pred,
            "compute": dict(search.compute), "archive_size": len(search.archive),
            "mlflow": {"run_id": tracker.run_id, "experiment": tracker.experiment, "tracking_uri": tracker.uri},
            "out_dir": str(search.ckpt.dir)}


def _ui_command(uri: str) -> str:
    if uri == f"sqlite:///{Path.cwd() / 'mlflow.db'}":
        return "mlflow ui"
    return f"open {uri}" if uri.startswith("http") else f"mlflow ui --backend-store-uri {uri}"


def format_summary(s: dict) -> str:
    """The final report printed at the end of a run."""
    b, lines = s.get("best") or {}, ["", f"== Dimorph {s['mode']} search on {s['preset']} (seed {s['seed']}) =="]
    if b:
        genes = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["genes"].items())
        lines += [f"best architecture {b['key']}: {genes} ({b['n_params']:,} params)",
                  f"  final train loss {b['final_train_loss']:.4f} | best val loss {b['best_val_loss']:.4f} "
                  f"(step {b['best_val_step']}) | train time {b['train_time_s']:.1f} s | inference "
                  f"{b.get('inference_tokens_per_s', float('nan')):.0f} tok/s with KV cache, "
                  f"{b.get('inference_tokens_per_s_no_cache', float('nan')):.0f} without"]
    else:
        lines.append("no architecture finished training (all diverged or failed)")
    base = s.get("baseline_best_val_loss")
    if base is not None and s["mode"] != "baseline" and math.isfinite(base):
        lines.append(f"  the preset's baseline architecture, same budget: best val loss {base:.4f}")
    if s.get("predictor"):
        p = s["predictor"]
        lines += [f"best predictor (Kendall tau {p['fit_kendall_tau']:.3f} on the archive, "
                  f"{p['holdout_kendall_tau']:.3f} held out): {p['sympy']}"]
    c, t = s["compute"], s.get("timing", {})
    lines += [f"compute: {c['flops']:.3g} training FLOPs, {c['seconds']:.0f} s in evaluations; "
              f"{c['full_trainings']} full and {c['early_trainings']} early trainings",
              f"wall time {t.get('search_wall_s', float('nan')):.0f} s ("
              f"{100 * t.get('outside_training_frac', float('nan')):.1f}% outside training) + "
              f"{t.get('inference_measure_s', float('nan')):.0f} s measuring inference speed",
              f"MLflow run {s['mlflow']['run_id']} (experiment '{s['mlflow']['experiment']}'): "
              f"{_ui_command(s['mlflow']['tracking_uri'])}",
              f"files in {s['out_dir']}: " + ", ".join(Path(f).name for f in s.get("files", []))]
    return "\n".join(lines)


def cli(argv=None) -> int:
    cfg = parse_config(argv, prog="python -m evo.run")
    try:
        main(cfg)
    except ValueError as e:  # bad input found after parsing (e.g. a foreign checkpoint)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
