"""Peer search methods at the same training-FLOPs budget as the engine's modes.

random: sample, train to the full budget, keep the best. asha: Optuna's SuccessiveHalvingPruner
over the same unit cube, trials trained in rungs that continue from saved states. evolution:
regularised (aging) evolution, Real et al. 2019 (arXiv:1802.01548), with the males' mutation. All
use the preset's space, the trainer through the executor, and one MLflow child run per architecture.
Each training's cost is known before it starts (evo.genome.step_cost); a method stops at the first
training that would take it past the budget, so it never spends more than the budget. Every finished training is journaled; a rerun replays it.
"""
from __future__ import annotations

import random
from collections import deque

import numpy as np

from evo.checkpoint import Checkpoint
from evo.config import Config
from evo.evaluate import EvalTask, failed
from evo.genome import decode, eval_seed, genes_key, make_arch_toolbox, search_preset, step_cost
from evo.ledger import INF, Evaluation, Ledger

PEERS = ("random", "asha", "evolution")


class PeerSearch:
    """Shared plumbing: journaled trainings, compute, MLflow logging, the best architecture."""

    def __init__(self, cfg: Config, method: str, executor, tracker, ckpt=None, **opts):
        if method not in PEERS:
            raise ValueError(f"peer method must be one of {', '.join(PEERS)}, got {method!r}")
        self.cfg, self.method, self.executor, self.tracker, self.opts = cfg, method, executor, tracker, opts
        self.preset = search_preset(cfg)
        self.E, self.F = self.preset.early_steps, self.preset.full_steps
        search = {k: v for k, v in cfg.search_fields().items()
                  if k in ("preset", "seed", "budget_flops", "early_frac", "full_steps", "threads")}
        self.resumed = ckpt is None and (cfg.out_dir / "checkpoint.json").exists()
        self.ckpt = ckpt or Checkpoint(cfg.out_dir, {**search, "method": method, **opts}, resume=self.resumed)
        self.ledger = Ledger(self.F, every_training=True)  # a history point after every training
        self.exhausted = False  # a training did not fit in the budget

    @property
    def budget(self) -> float:
        """The FLOPs budget (inf when none is set)."""
        return self.cfg.budget_flops or INF

    def spent(self) -> bool:
        """True once the budget is used up or a training did not fit in it: no new training starts."""
        return self.exhausted or self.ledger.compute["flops"] >= self.budget

    def train(self, key: str, genes: dict, steps: int, role: str, parents=()) -> dict | None:
        """Train `key` up to `steps` (continuing from its last state); journaled and logged once.
        None (and nothing more starts) when the training's cost, known before it runs, would take
        the compute past the budget: a method never spends more than its budget."""
        prev = self.ledger.records[key].result if key in self.ledger.records else None
        start = prev["steps"] if prev else 0
        cost = step_cost(self.cfg, self.preset, genes) * (steps - start)
        if self.exhausted or self.ledger.compute["flops"] + cost > self.budget * (1 + 1e-12):
            self.exhausted = True
            return None
        rec = self.ledger.records.get(key) or self.ledger.new(key, genes, role=role, parents=parents)
        task = EvalTask(key=f"{key}/s{steps}", genes=genes, preset=self.preset, steps=steps,
                        seed=eval_seed(self.cfg.seed, genes), data=self.cfg.data, device=self.cfg.device,
                        threads=self.cfg.threads, load_state=rec.state_file,
                        save_state=self.ckpt.state_path(f"{key}/s{steps}"),
                        phase="straight" if not prev and steps == self.F else "early" if steps < self.F else "full")
        res = self.ckpt.evaluation(task, lambda: next(iter(self.executor.run([task]))))
        self.ledger.absorb(rec, task, res)
        self._log(rec, res, start)
        compute = self.ledger.compute
        n = compute["trainings"]
        self.ckpt.once(f"gen/{n}", lambda: self.tracker.log_generation(n, {
            "arch/best_val_loss": self.ledger.history[-1]["best_val_loss"], "cost/flops": compute["flops"],
            "cost/seconds": compute["seconds"], "cost/full_trainings": compute["full_trainings"]}) or True)
        self.ckpt.snapshot(self.state())
        return res

    def _log(self, rec: Evaluation, res: dict, start: int) -> None:
        def write():
            run_id = rec.run_id or (self.tracker.find_child(rec.key) if self.resumed else None)
            return self.tracker.log_phase(
                rec.key, res, phase="early" if res.get("steps", 0) < self.F else "full", outcome=True,
                genes=rec.genes if start == 0 else None, seed=eval_seed(self.cfg.seed, rec.genes),
                role=rec.role, parents=rec.parents, method=self.method, run_id=run_id,
                after_step=start if start else -1)
        rec.run_id = self.ckpt.once(f"log/{rec.key}/s{res.get('steps')}", write)

    def state(self) -> dict:
        """JSON-able snapshot: records, compute, history and the best architecture."""
        return {"method": self.method, "compute": dict(self.ledger.compute), "history": self.ledger.history,
                "records": [{"key": r.key, "genes": r.genes, "target": r.target,
                             "steps": (r.result or {}).get("steps"), "role": r.role}
                            for r in self.ledger.records.values()],
                "best": self.ledger.best_entry()}

    def key(self) -> str:
        """The next architecture's key: method initial and a running number."""
        return f"{self.method[0]}{len(self.ledger.records):04d}"

    def run(self) -> None:
        """Search until the budget is spent (replaying journaled trainings)."""
        random.seed(self.cfg.seed)
        np.random.seed(self.cfg.seed % 2**32)
        {"random": self._random, "asha": self._asha, "evolution": self._evolution}[self.method]()

    # -- the three methods ------------------------------------------------------------------------------
    def _random(self) -> None:
        rng = random.Random(self.cfg.seed)
        first = True
        while not self.spent():
            genes = dict(self.preset.baseline) if first else self.preset.sample(rng)
            self.train(self.key(), genes, self.F, "baseline" if first else "random")
            first = False

    def _evolution(self) -> None:
        P, S = self.opts.get("population", 8), self.opts.get("sample", 3)
        tb = make_arch_toolbox(self.preset)  # bounded polynomial mutation, as the males
        pop: deque = deque()
        seen: set[str] = set()

        def add(u, role, parents=()):
            key, genes = self.key(), decode(u, self.preset)
            seen.add(genes_key(genes))
            if self.train(key, genes, self.F, role, parents) is None:
                return
            pop.append((key, u))
            if len(pop) > P:
                pop.popleft()  # aging: the oldest dies, not the worst

        add(self.preset.encode(self.preset.baseline), "baseline")
        while not self.spent() and len(pop) < P:
            add(tb.individual(), "init")
        while not self.spent():
            sample = random.sample(list(pop), min(S, len(pop)))
            pkey, parent = min(sample, key=lambda kv: (_target(self.ledger.records[kv[0]]), kv[0]))
            child = tb.clone(parent)
            for _ in range(20):  # re-mutate a child that decodes to an architecture already trained
                tb.mutate(child)
                if genes_key(decode(child, self.preset)) not in seen:
                    break
            add(list(child), "child", [pkey])

    def rungs(self) -> list[int]:
        """ASHA's rung budgets: min_resource * eta^k below the full budget, then the full budget."""
        eta, r = self.opts.get("reduction_factor", 3), self.opts.get("min_resource") or self.E
        out = []
        while r < self.F:
            out.append(int(r))
            r *= eta
        return out + [self.F]

    def _asha(self) -> None:
        import optuna
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler_name = self.opts.get("sampler", "tpe")
        sampler = (optuna.samplers.TPESampler(seed=self.cfg.seed) if sampler_name == "tpe"
                   else optuna.samplers.RandomSampler(seed=self.cfg.seed))
        pruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=self.rungs()[0], reduction_factor=self.opts.get("reduction_factor", 3))
        study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
        names = self.preset.gene_names
        study.enqueue_trial({f"u_{n}": u for n, u in zip(names, self.preset.encode(self.preset.baseline))})
        while not self.spent():
            trial = study.ask()
            genes = decode([trial.suggest_float(f"u_{n}", 0.0, 1.0) for n in names], self.preset)
            key, reported, outcome, rec = self.key(), 0, None, None
            for r in self.rungs():
                if self.spent():
                    break
                res = self.train(key, genes, r, "baseline" if trial.number == 0 else "trial")
                if res is None:  # the next rung does not fit in the budget
                    break
                rec = self.ledger.records[key]
                if failed(res):
                    outcome = TrialState.FAIL
                    break
                for s, v in zip(res["eval_steps"], res["val_losses"]):
                    if s > reported:
                        trial.report(v, s)
                        reported = s
                if r < self.F and trial.should_prune():
                    outcome = TrialState.PRUNED
                    self._mark_pruned(rec, r)
                    break
            if outcome is not None:
                study.tell(trial, state=outcome)
            elif rec is not None and rec.fully_trained:
                study.tell(trial, rec.target)
            else:  # the budget ran out inside this trial
                if rec is not None:
                    self.ledger.release(rec)
                study.tell(trial, state=TrialState.FAIL)

    def _mark_pruned(self, rec: Evaluation, steps: int) -> None:
        rec.role = f"pruned@{steps}"
        self.ledger.release(rec)
        self.ckpt.once(f"prune/{rec.key}", lambda: self.tracker.log_decision(rec.key, rec.run_id, rec.role))
        self.ckpt.snapshot(self.state())


def run_peer(cfg: Config, method: str, tracker, executor, **opts) -> dict:
    """Run (or resume) one peer search; returns its summary (same layout as evo.run's)."""
    from evo.report import best_numbers

    search = PeerSearch(cfg, method, executor, tracker, **opts)
    params = {"mode": method, "preset": cfg.preset, "seed": cfg.seed, "budget_flops": cfg.budget_flops,
              "preset.full_steps": search.F, "preset.early_steps": search.E, "data": cfg.data,
              **{f"peer.{k}": v for k, v in opts.items()}}
    search.ckpt.run_id = tracker.start_search(params, run_name=f"{method}-{cfg.preset}-seed{cfg.seed}",
                                              run_id=search.ckpt.run_id, tags={"dimorph.mode": method})
    search.ckpt.snapshot(search.state())
    try:
        search.run()
    except BaseException:
        search.ckpt.close()
        tracker.finish(None, status="FAILED")
        raise

    def finish():
        summary = {"mode": method, "preset": cfg.preset, "seed": cfg.seed, "best": best_numbers(search),
                   "compute": dict(search.ledger.compute), "history": search.ledger.history, "options": opts,
                   "mlflow": {"run_id": tracker.run_id, "experiment": tracker.experiment, "tracking_uri": tracker.uri},
                   "out_dir": str(search.ckpt.dir)}
        tracker.finish(summary)
        return summary

    summary = search.ckpt.once("finish", finish)
    search.ckpt.close()
    return summary


def _target(rec: Evaluation) -> float:
    """Aging evolution's fitness: the target, inf while there is none."""
    return INF if rec.target is None else rec.target
