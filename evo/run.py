"""`python -m evo.run --gens 20`: argv -> Config -> Search (locks --out) -> Tracker -> run -> summary."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

from evo.config import Config, parse_config
from evo.machine import environment
from evo.seeding import seed_everything


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


class Terminated(BaseException):
    """SIGTERM during a search: raised in the main thread, handled like Ctrl-C's KeyboardInterrupt."""


@contextlib.contextmanager
def _sigterm_interrupts():
    """While a search runs, SIGTERM stops it as Ctrl-C does (a second SIGTERM acts at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.getsignal(signal.SIGTERM)
    old = signal.SIG_DFL if old is None else old

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, old)
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _quietly(fn, *args, **kw) -> None:
    """A last MLflow update on the way out: its failure (say, the server is down) must not hide why."""
    try:
        fn(*args, **kw)
    except Exception as e:
        print(f"warning: could not update the MLflow run: {e}", file=sys.stderr)


def main(cfg: Config) -> dict:
    """Run (or resume) one search; returns the final summary."""
    from evo.engine import Search
    from evo.executors import make_executor
    from evo.report import best_numbers, log_best_model, write_all
    from evo.space import trains_model
    from evo.tracking import Tracker, killed_status

    t_start = time.perf_counter()
    bars = None
    with _sigterm_interrupts(), make_executor(cfg) as executor:
        # the checkpoint first: it locks --out and refuses a foreign checkpoint before MLflow is touched
        search = Search(cfg, executor, None, on_eval=lambda res: bars.on_eval(res),
                        on_generation=lambda g, row: bars.on_generation(g, row))
        ckpt = search.ckpt
        try:
            # on resume, the store the search was started with (wherever this command runs from)
            tracker = search.tracker = Tracker(cfg.tracking_uri or ckpt.tracking_uri, cfg.experiment,
                                               create=ckpt.run_id is None)
            ckpt.tracking_uri = tracker.uri
            prev = ckpt.get("finish")
            if isinstance(prev, dict) and prev.get("gens") == cfg.gens:  # finished: nothing to redo
                if ckpt.run_id:
                    tracker.start_search({}, run_name="", run_id=ckpt.run_id, reopen=False)
                if ckpt.rebuilt:  # the snapshot was unreadable: replaying the journal writes it again
                    bars = _Bars(cfg, False)
                    seed_everything(cfg.seed)
                    search.run()
                print(format_summary(prev))
                return prev
            params = {k: v for k, v in {**dataclasses.asdict(cfg), **{f"preset.{k}": v for k, v in
                      _preset_params(search.preset).items()}}.items() if v is not None}  # unset: not logged
            data = _dataset(cfg)
            if data:  # the file read, wherever it came from (--data, $DIMORPH_DATA, the cache)
                params["data"] = str(data[0])
            if cfg.table:
                tracker.set_cost_unit(*_table_cost_unit(cfg.table))
            elif _user_objective(cfg):
                tracker.set_cost_unit(search.F / 100, "1/100 of a full training (training steps)",
                                     "search/best_val_loss_by_pct_full_steps")
            ckpt.run_id = tracker.start_search(params, run_name=f"{cfg.mode}-{cfg.preset}-seed{cfg.seed}",
                                               run_id=ckpt.run_id, tags={"dimorph.mode": cfg.mode})
            tracker.set_tags({f"dimorph.env.{k}": v for k, v in environment().items() if v not in (None, {})})
            if data:
                tracker.log_dataset(*data)
            try:
                seed_everything(cfg.seed)
                ckpt.snapshot(search.state())
                bars = _Bars(cfg, cfg.progress)
                search.run()
                bars.close()

                t_inf = time.perf_counter()
                best = best_numbers(search, measure=trains_model(cfg))
                t_inf = time.perf_counter() - t_inf
                summary = _summary(search, tracker, best)
                wall = time.perf_counter() - t_start - t_inf
                summary["timing"] = {"search_wall_s": wall, "inference_measure_s": t_inf,
                                     "waiting_for_training_s": search.wait_s,
                                     "outside_training_frac": max(0.0, 1 - search.wait_s / wall)}
                summary["mlflow"].update(log_best_model(search, tracker, best))
                summary["files"] = [str(p) for p in write_all(search, tracker, summary)]
                tracker.finish(summary)
                ckpt.record("finish", summary)  # the latest finish wins: a search extended (--gens) finishes again
            except (KeyboardInterrupt, Terminated) as e:
                if bars is not None:
                    bars.close()
                ckpt.snapshot(search.state())
                _quietly(tracker.finish, None, status=killed_status())
                how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
                print(f"\n{how}: checkpoint saved in {ckpt.dir}; continue with the same command "
                      f"plus --resume", file=sys.stderr)
                raise SystemExit(143 if isinstance(e, Terminated) else 130) from None
            except BaseException as e:
                if bars is not None:
                    bars.close()
                _quietly(tracker.finish, None, status="FAILED")
                if not cfg.resume and not ckpt.evaluated():  # refused at its start: --out stays free
                    ckpt.discard()
                if isinstance(e, FileNotFoundError) and e.filename and Path(e.filename).parent == ckpt.states:
                    raise _missing_state(e.filename, ckpt) from None
                raise
        finally:
            ckpt.close()
    print(format_summary(summary))
    return summary


def _user_objective(cfg: Config) -> bool:
    """Whether the search is of a user's objective (steps as its cost, no model of its own)."""
    from evo.space import trains_model

    return not cfg.table and not trains_model(cfg)


def _missing_state(path: str, ckpt):
    from evo.checkpoint import CheckpointError

    return CheckpointError(
        f"the saved training state {path} is missing (deleted?): a promoted architecture continues "
        f"from it, and it cannot be rebuilt from the journal. Restore the file, or start the search "
        f"again in a new --out (checkpoint {ckpt.path})")


def _dataset(cfg: Config) -> tuple[Path, str] | None:
    """(path, sha256) of the dataset a live search trains on; None for a table search (no dataset)."""
    from evo.space import trains_model

    if not trains_model(cfg):
        return None
    from evo.config import dataset_id
    from models.data import resolve_text

    return resolve_text(cfg.data), dataset_id(cfg.data)


def _relative(path: str, folder: str) -> str:
    """A written file's path inside the search's folder (figures/lineage.png), else its name."""
    try:
        return Path(path).resolve().relative_to(Path(folder).resolve()).as_posix()
    except ValueError:
        return Path(path).name


def _table_cost_unit(table: str) -> tuple[float, str, str]:
    """The best-so-far staircase's step on a table (1/100 of its mean full-training cost), its
    label and its metric's name, the unit in it."""
    from evo.table import load_table

    t = load_table(table)
    return (t.mean_full_cost() / 100, f"1/100 of the table's mean full-training cost ({t.meta['cost_unit']})",
            "search/best_val_loss_by_pct_full_cost")


def _preset_params(preset) -> dict:
    skip = ("space", "baseline", "unit_rows", "row_genes")  # a table's rows are its data, not settings
    return {k: v for k, v in dataclasses.asdict(preset).items() if k not in skip} | {
        "early_steps": preset.early_steps, "baseline": json.dumps(preset.baseline)}


def _summary(search, tracker, best: dict) -> dict:
    """The search's result: the best architecture's numbers, the baseline's loss, the champion
    predictor (its fit and held-out taus, how many architectures were held out and the held-out
    tau's 95% interval), the compute, where MLflow holds it."""
    from evo.report import tau_interval

    cfg = search.cfg
    champ = search.fem.champion() if search.fem and search.fem.pop else None
    pred = None
    if champ is not None:
        from primitives.export import to_sympy
        n = getattr(champ, "holdout_n", None)
        pred = {"tree": str(champ), "sympy": str(to_sympy(champ, search.fem.pset)),
                "fit_kendall_tau": champ.fitness.values[0], "holdout_kendall_tau": champ.holdout_tau,
                "holdout_n": n, "holdout_ci": tau_interval(champ.holdout_tau, n)}
    records = search.ledger.records
    base = records.get("g0-b0") or records.get("baseline")
    base_loss = base.target if base else None  # inf when the baseline's training failed: reported as None
    space = {}
    if _user_objective(cfg):  # a user's training loop: its name, steps as the cost, its own configuration
        space = {"preset": search.preset.name, "cost_unit": "training steps",
                 "baseline_label": "the space's baseline configuration",
                 "inference_note": "inference not measured (a user objective)"}
    elif cfg.table:
        from evo.table import load_table

        space = {"preset": search.preset.name, "cost_unit": load_table(cfg.table).meta["cost_unit"]}
    return {"mode": cfg.mode, "preset": cfg.preset if cfg.table else search.preset.name, **space, "seed": cfg.seed, "gens": cfg.gens,
            "best": best, "baseline_best_val_loss": base_loss if base_loss is not None and math.isfinite(base_loss)
            else None, "predictor": pred,
            "compute": dict(search.ledger.compute), "archive_size": len(search.ledger.archive),
            "mlflow": {"run_id": tracker.run_id, "experiment": tracker.experiment, "tracking_uri": tracker.uri,
                       "experiment_id": getattr(tracker, "experiment_id", None)},
            "out_dir": str(search.ckpt.dir), "environment": environment()}


def _ui_command(m: dict, out_dir: str | None = None) -> str:
    """How to see the run: `python -m evo.ui --out <out_dir>` (it serves the store and opens the
    searches), or for a tracking server the run's page; then the plain MLflow way."""
    from evo.tracking import ui_url
    from evo.tracking.summary import default_store

    uri = m["tracking_uri"]
    serve = "" if uri.startswith("http") else "mlflow ui" if default_store(uri) else f"mlflow ui --backend-store-uri {uri}"
    if not m.get("experiment_id"):
        return serve or f"open {uri}"
    page = ui_url(uri, m["experiment_id"], m["run_id"])
    if not serve:
        return f"open {page}"
    return (f"python -m evo.ui --out {out_dir} (or {serve}, then open {page})" if out_dir
            else f"{serve}, then open {page}")


def format_summary(s: dict) -> str:
    """The final report printed at the end of a run (the result in the words of the parent run's
    description, evo.tracking.summary_lines, plus the run's wall time, MLflow run and files)."""
    from evo.tracking.summary import summary_lines

    t = s.get("timing", {})
    run = [f"wall time {t.get('search_wall_s', float('nan')):.0f} s ("
           f"{100 * t.get('outside_training_frac', float('nan')):.1f}% outside training) + "
           f"{t.get('inference_measure_s', float('nan')):.0f} s measuring inference speed",
           f"MLflow run {s['mlflow']['run_id']} (experiment '{s['mlflow']['experiment']}'): "
           f"{_ui_command(s['mlflow'], s.get('out_dir'))}"]
    lines = ["", *summary_lines(s, run_lines=run),
             f"files in {s['out_dir']}: " + ", ".join(_relative(f, s['out_dir']) for f in s.get("files", []))]
    return "\n".join(lines)


def cli(argv=None) -> int:
    from models.data import DataUnavailable

    cfg = parse_config(argv, prog="python -m evo.run")
    try:
        main(cfg)
    except (ValueError, DataUnavailable) as e:  # bad input found after parsing: a foreign checkpoint,
        print(f"error: {e}", file=sys.stderr)   # a locked or unwritable --out, an unreachable server
        return 2
    except Terminated:  # before the search started: nothing to save
        return 143
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli())
