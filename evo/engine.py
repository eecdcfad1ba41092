"""The co-evolution loop: males (architectures) and females (predictors), for all four modes.

See docs/ALGORITHM.md for what each step does and why.
"""
from __future__ import annotations

import math
import random
import time

import numpy as np
from deap import tools

from evo.checkpoint import Checkpoint
from evo.config import Config
from evo.evaluate import EvalTask
from evo.females import Females
from evo.genome import decode, eval_seed, from_genes, genes_key, make_arch_toolbox, search_preset
from evo.ledger import INF, Evaluation, Ledger
from primitives.features import curve_features

BIG = 1e9  # a male's objective when it has none (failed, or no target yet)


class Search:
    """One search. `executor.run(tasks)` yields results as they finish; `tracker` is the MLflow writer."""

    def __init__(self, cfg: Config, executor, tracker, on_eval=None, on_generation=None, ckpt=None):
        self.cfg, self.executor, self.tracker = cfg, executor, tracker
        self.preset = search_preset(cfg)
        self.E, self.F = self.preset.early_steps, self.preset.full_steps
        self.ckpt = ckpt or Checkpoint(cfg.out_dir, cfg.search_fields(), resume=cfg.resume)
        self.arch_tb = make_arch_toolbox(self.preset)
        self.fem = Females(cfg.arch_features) if cfg.mode in ("female", "combined") else None
        self.ledger = Ledger(self.F)  # records, archive, compute, history, state files
        self.seen: set[str] = set()   # genes_key of every architecture evaluated so far
        self.males: list = []
        self.logbook = tools.Logbook()
        self.wait_s = 0.0  # seconds the driver spent waiting for evaluations
        self.on_eval = on_eval or (lambda res: None)
        self.on_generation = on_generation or (lambda g, row: None)

    # -- evaluation plumbing -------------------------------------------------------------------
    def _task(self, key: str, genes: dict, steps: int, phase: str, load: str | None = None) -> EvalTask:
        save = self.ckpt.state_path(key)
        return EvalTask(key=key, genes=genes, preset=self.preset, steps=steps,
                        seed=eval_seed(self.cfg.seed, genes), data=self.cfg.data, device=self.cfg.device,
                        threads=self.cfg.threads, load_state=load, save_state=save, phase=phase)

    def _run(self, tasks: list[EvalTask]) -> dict[str, dict]:
        """Evaluate tasks (journaled ones are replayed, not retrained); log each once to MLflow."""
        by_key = {t.key: t for t in tasks}
        done = {t.key: self.ckpt.evaluation(t, None) for t in tasks if "eval/" + t.key in self.ckpt}
        todo = [t for t in tasks if t.key not in done]
        results = iter(self.executor.run(todo))
        while True:
            t0 = time.perf_counter()
            res = next(results, None)
            self.wait_s += time.perf_counter() - t0  # the driver idles while trainings run
            if res is None:
                break
            done[res["key"]] = res = self.ckpt.evaluation(by_key[res["key"]], lambda res=res: res)
            self.on_eval(res)
        for t in tasks:  # in task order, so logging and bookkeeping never depend on arrival order
            self._absorb(by_key[t.key], done[t.key])
        return done

    def _absorb(self, task: EvalTask, res: dict) -> None:
        rec = self.ledger.records[task.key.split("/")[0]]
        self.ledger.absorb(rec, task, res)
        if task.phase == "early" and rec.early_done:
            rec.features = self._features(rec)
        self._log(rec, task, res)

    def _features(self, rec: Evaluation) -> dict:
        r = rec.early
        steps = r.get("train_steps") or list(range(1, len(r["train_losses"]) + 1))
        return curve_features(steps, r["train_losses"], r["eval_steps"], r["val_losses"], self.E, self.F,
                              n_params=r.get("n_params"), lr=rec.genes.get("lr"))

    def _log(self, rec: Evaluation, task: EvalTask, res: dict) -> None:
        def write():
            run_id = rec.run_id or (self.tracker.find_child(rec.key) if self.cfg.resume else None)
            early = task.phase == "early"
            return self.tracker.log_phase(
                rec.key, res, phase=task.phase, outcome=not early, genes=task.genes if early else None,
                seed=task.seed, generation=rec.generation, role=rec.role, parents=rec.parents,
                features=rec.features if early else None, early_val=rec.early_val if early else None,
                run_id=run_id, after_step=self.E if task.phase == "full" else -1)
        rec.run_id = self.ckpt.once(f"log/{task.key}", write)

    # -- the generations -------------------------------------------------------------------------
    def _new(self, key: str, genes: dict, gen: int, role: str, parents=()) -> Evaluation:
        self.seen.add(genes_key(genes))
        return self.ledger.new(key, genes, gen, role, parents)

    def _early(self, keys: list[str]) -> None:
        self._run([self._task(k, self.ledger.records[k].genes, self.E, "early") for k in keys])

    def _continue(self, keys: list[str]) -> None:
        """Continue those of `keys` whose early phase did not fail to the full budget."""
        recs = [self.ledger.records[k] for k in keys]
        self._run([self._task(r.key + "/full", r.genes, self.F, "full", load=r.state_file)
                   for r in recs if r.early_done])

    def _release(self, keys: list[str]) -> None:
        """These early-trained architectures will not be continued: their states go."""
        for k in keys:
            self.ledger.release(self.ledger.records[k])

    def run(self) -> dict:
        """Run every generation (replaying journaled work on resume); returns the final state."""
        random.seed(self.cfg.seed)
        np.random.seed(self.cfg.seed % 2**32)
        if self.cfg.mode == "baseline":
            base = self._new("baseline", dict(self.preset.baseline), 0, "baseline")
            self._run([self._task("baseline", base.genes, self.F, "straight")])
            self._end_generation(0, None)
            return self.state()
        self._generation0()
        for g in range(1, self.cfg.gens + 1):
            if self.cfg.budget_flops and self.ledger.compute["flops"] >= self.cfg.budget_flops:
                break
            self._generation(g)
        return self.state()

    def _generation0(self) -> None:
        cfg = self.cfg
        inds = [from_genes(self.preset.baseline, self.preset)]
        inds += [self.arch_tb.individual() for _ in range(cfg.bootstrap - 1)]
        for i, ind in enumerate(inds):
            ind.key = f"g0-b{i}"
            self._new(ind.key, decode(ind, self.preset), 0, "baseline" if i == 0 else "bootstrap")
        if cfg.mode in ("male", "combined"):
            extra = [self.arch_tb.individual() for _ in range(max(0, cfg.males - len(inds)))]
            for i, ind in enumerate(extra):
                ind.key = f"g0-i{i}"
                self._new(ind.key, decode(ind, self.preset), 0, "init")
            self._early([i.key for i in inds + extra])
            self._continue([i.key for i in inds])
            self._release([i.key for i in extra])  # the extra males are early-trained only
            self.males = self._rank_males(inds + extra, None)[: cfg.males]
        else:
            self._early([i.key for i in inds])
            self._continue([i.key for i in inds])
        champion = None
        if self.fem:
            self.fem.init(cfg.females)
            self.fem.evolve(self.ledger.archive, cfg.pred_steps, cfg.females)
            champion = self.fem.champion()
        self._end_generation(0, champion)

    def _generation(self, g: int) -> None:
        cfg, tb = self.cfg, self.arch_tb
        champion = self.fem.champion() if self.fem else None
        ranked_m = self._rank_males(self.males, champion) if self.males else []
        ranked_f = self.fem.ranked(self.fem.pop) if self.fem else []
        children, pred_children = [], []
        for i in range(cfg.offspring):
            key = f"g{g}-c{i}"
            if cfg.mode == "female":
                child, parents = tb.individual(), []
            else:
                mother = ranked_m[i % len(ranked_m)]
                top = ranked_m[: max(2, len(ranked_m) // 2)]
                partner = random.choice([m for m in top if m is not mother] or top)
                child, other = tb.clone(mother), tb.clone(partner)
                if random.random() < 0.9:
                    tb.mate(child, other)
                tb.mutate(child)
                for _ in range(20):  # an architecture already evaluated would only cost compute twice
                    if genes_key(decode(child, self.preset)) not in self.seen:
                        break
                    tb.mutate(child)
                del child.fitness.values
                parents = [mother.key, partner.key]
            if self.fem:  # the pair is a lineage: the i-th male with the i-th female
                top_f = ranked_f[: max(2, len(ranked_f) // 2)]
                f = ranked_f[i % len(ranked_f)]
                pred_children.append(self.fem.child(f, random.choice([x for x in top_f if x is not f] or top_f)))
            child.key = key
            children.append(child)
            self._new(key, decode(child, self.preset), g, "child", parents)
        self._early([c.key for c in children])
        promoted = self._promote(g, children, champion)
        self._continue(promoted)
        self._release([c.key for c in children if c.key not in promoted])
        if self.fem:
            self.fem.pop = self.fem.pop + pred_children
            self.fem.evolve(self.ledger.archive, max(1, cfg.pred_steps), cfg.females)
            champion = self.fem.champion()
        if cfg.mode in ("male", "combined"):
            self.males = self._rank_males(self.males + children, champion)[: cfg.males]
        self._end_generation(g, champion)

    def _judge(self, champion):
        """The champion, when there is an archive to calibrate her on (else the early loss ranks)."""
        return champion if self.ledger.archive else None

    def _promote(self, g: int, children: list, champion) -> list[str]:
        """The ranker's top `promote` children plus `promote_random` drawn from the rest."""
        champion = self._judge(champion)
        recs = [r for r in (self.ledger.records[c.key] for c in children) if r.early_done]
        if champion is not None:
            score = self.fem.raw(champion, recs)
            shown = self.fem.predict_losses(champion, self.ledger.archive, recs)
            for rec, s, p in zip(recs, score, shown):
                rec.score, rec.predicted = float(s), float(p)
        else:
            for rec in recs:
                rec.score = rec.predicted = rec.early_val
        order = [r.key for r in sorted(recs, key=lambda r: (r.score, r.key))]
        chosen = order[: self.cfg.promote]
        rest = order[self.cfg.promote:]
        lucky = random.sample(rest, min(self.cfg.promote_random, len(rest)))
        judge = str(champion) if champion is not None else "early-val-loss"
        for rec in recs:
            rec.role = "promoted" if rec.key in chosen else "random" if rec.key in lucky else "early-only"
            self.ckpt.once(f"pred/{rec.key}", lambda rec=rec: self.tracker.log_decision(
                rec.key, rec.run_id, rec.role, judge, rec.predicted, rec.score))
        return chosen + lucky

    def _rank_males(self, pop: list, champion) -> list:
        """Best first. male: early val loss; combined: NSGA-II fronts on (early val loss, target),
        the target being the true one once fully trained and the champion's prediction before."""
        champion = self._judge(champion)
        recs = [self.ledger.records[i.key] for i in pop]
        early = [r.early_val for r in recs]
        target = [r.target for r in recs]
        pending = [j for j, t in enumerate(target) if t is None and math.isfinite(early[j])]
        if self.cfg.mode == "combined" and champion is not None and pending:
            shown = self.fem.predict_losses(champion, self.ledger.archive, [recs[j] for j in pending])
            for j, p in zip(pending, shown):
                target[j] = float(p)
        for ind, e, t in zip(pop, early, target):
            if not math.isfinite(e):
                ind.fitness.values = (BIG, BIG)
            elif self.cfg.mode == "male":
                ind.fitness.values = (e, e)
            else:
                ind.fitness.values = (e, t if t is not None and math.isfinite(t) else BIG)
        if self.cfg.mode == "male":
            return sorted(pop, key=lambda i: (i.fitness.values[0], i.key))
        out = []
        for front in tools.sortNondominated(pop, len(pop)):
            tools.emo.assignCrowdingDist(front)
            out += sorted(front, key=lambda i: (-i.fitness.crowding_dist, i.key))
        return out

    def _end_generation(self, g: int, champion) -> None:
        best, compute = self.ledger.best(), self.ledger.compute
        row = {"arch/best_val_loss": best.target if best else INF, "archive/size": len(self.ledger.archive),
               "cost/flops": compute["flops"], "cost/seconds": compute["seconds"],
               "cost/full_trainings": compute["full_trainings"],
               "cost/early_trainings": compute["early_trainings"]}
        if champion is not None:
            row["pred/kendall_tau"] = champion.fitness.values[0]
            row["pred/holdout_tau"] = getattr(champion, "holdout_tau", float("nan"))
            row["pred/size"] = len(champion)
            row["div/female_unique"] = len({str(f) for f in self.fem.pop}) / len(self.fem.pop)
        if self.males:
            row["div/male_gene_std"] = float(np.mean(np.std(np.array([list(m) for m in self.males]), axis=0)))
        self.logbook.record(gen=g, **row)
        self.ckpt.once(f"gen/{g}", lambda: self.tracker.log_generation(g, row) or True)
        self.on_generation(g, row)
        self.ckpt.snapshot(self.state())

    def state(self) -> dict:
        """Everything a reader of the checkpoint needs (JSON-able)."""
        return {
            "males": [{"key": m.key, "genome": list(m)} for m in self.males],
            "females": [str(f) for f in self.fem.ranked(self.fem.pop)] if self.fem else [],
            "female_features": list(self.fem.features) if self.fem else [],
            "archive": [{"key": r.key, "genes": r.genes, "target": r.target, "features": r.features}
                        for r in self.ledger.archive],
            "best": self.ledger.best_entry(),
            "compute": dict(self.ledger.compute),
            "history": self.ledger.history,
            "logbook": list(self.logbook),
        }

