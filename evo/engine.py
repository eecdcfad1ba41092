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
from evo.genome import decode, eval_seed, from_genes, genes_key, make_arch_toolbox, search_preset, step_cost
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
        self.prior: list[Evaluation] = []  # --warm-start records: the females' archive only
        self.exhausted = False  # a task did not fit in --budget-flops: no more start
        self.credit: dict[str, list[float]] = {}  # female formula -> how her fully trained children did
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
        """Evaluate tasks (journaled ones are replayed, not retrained); log each once to MLflow.
        With --budget-flops only the tasks that still fit run (in order, up to the first that does
        not): the budget is never exceeded, and once a task is refused the search ends."""
        tasks = self._admit(tasks)
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

    def _admit(self, tasks: list[EvalTask]) -> list[EvalTask]:
        budget = self.cfg.budget_flops
        if not budget:
            return tasks
        planned, out = self.ledger.compute["flops"], []
        for t in tasks:
            cost = self._cost(t)
            if self.exhausted or planned + cost > budget * (1 + 1e-12):
                self.exhausted = True
                break
            planned += cost
            out.append(t)
        return out

    def _done_steps(self, task: EvalTask) -> int:
        """Steps already trained that `task` continues from (a continuation pays only its own)."""
        rec = self.ledger.records[task.key.split("/")[0]]
        return rec.result["steps"] if task.phase == "full" and rec.result else 0

    def _cost(self, task: EvalTask) -> float:
        """What `task` will be charged, known before it runs."""
        return step_cost(self.cfg, self.preset, task.genes) * (task.steps - self._done_steps(task))

    def _absorb(self, task: EvalTask, res: dict) -> None:
        self._log(*self._book(task, res))

    def _book(self, task: EvalTask, res: dict) -> tuple:
        """Book a result in the ledger (and its early features); returns what `_log` needs."""
        rec = self.ledger.records[task.key.split("/")[0]]
        before = rec.result["steps"] if rec.result else -1
        self.ledger.absorb(rec, task, res)
        if task.phase == "early" and rec.early_done:
            rec.features = self._features(rec)
        return rec, task, res, before

    def _features(self, rec: Evaluation, upto: int | None = None) -> dict:
        """Features of the curve so far, cut at `upto` steps (the early budget unless a rung's)."""
        r = rec.early
        steps = r.get("train_steps") or list(range(1, len(r["train_losses"]) + 1))
        return curve_features(steps, r["train_losses"], r["eval_steps"], r["val_losses"], upto or self.E, self.F,
                              n_params=r.get("n_params"), lr=rec.genes.get("lr"))

    def _log(self, rec: Evaluation, task: EvalTask, res: dict, before: int = -1) -> None:
        def write():
            run_id = rec.run_id or (self.tracker.find_child(rec.key) if self.cfg.resume else None)
            early = task.phase == "early"
            return self.tracker.log_phase(
                rec.key, res, phase=task.phase, outcome=task.phase in ("full", "straight"), genes=task.genes if early else None,
                seed=task.seed, generation=rec.generation, role=rec.role, parents=rec.parents,
                features=rec.features if early else None, early_val=rec.early_val if early else None,
                run_id=run_id, after_step=before,
                female=rec.female if early else None, female_child=rec.female_child if early else None)
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
        if self.fem and self.cfg.warm_start:
            self._load_prior()
        if self.cfg.mode == "baseline":
            base = self._new("baseline", dict(self.preset.baseline), 0, "baseline")
            self._run([self._task("baseline", base.genes, self.F, "straight")])
            self._end_generation(0, None)
            return self.state()
        self._generation0()
        if self.cfg.steady and self.cfg.gens and not self.exhausted:
            from evo.steady import Steady

            Steady(self).run()
            return self.state()
        for g in range(1, self.cfg.gens + 1):
            if self.exhausted:
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
            trained = [i for i in inds + extra if not self.ledger.records[i.key].pending]
            self.males = self._rank_males(trained, None)[: cfg.males]
        else:
            self._early([i.key for i in inds])
            self._continue([i.key for i in inds])
        champion = None
        if self.fem:
            self.fem.init(cfg.females)
            self.fem.evolve(self.fem_archive(), cfg.pred_steps, cfg.females)
            champion = self.fem.champion()
        self._end_generation(0, champion)

    def _generation(self, g: int) -> None:
        cfg = self.cfg
        champion = self.fem.champion() if self.fem else None
        ranked_m = self._rank_males(self.males, champion) if self.males else []
        ranked_f = self.fem.mating_order(self.fem.ranked(self.fem.pop), self.credit, self.cfg.credit) if self.fem else []
        children, pred_children = [], []
        for i in range(cfg.offspring):
            child, pred = self._breed(g, i, ranked_m, ranked_f)
            children.append(child)
            if pred is not None:
                pred_children.append(pred)
        self._early([c.key for c in children])
        chosen, lucky = self._promote(g, children, champion)
        promoted = self._rungs(chosen, champion) + lucky
        self._continue(promoted)
        self._release([c.key for c in children if c.key not in promoted])
        self._credit(promoted)
        if self.fem:
            self.fem.pop = self.fem.pop + pred_children
            self.fem.evolve(self.fem_archive(), max(1, cfg.pred_steps), cfg.females)
            champion = self.fem.champion()
        if cfg.mode in ("male", "combined"):
            trained = [c for c in children if not self.ledger.records[c.key].pending]  # not cut by the budget
            self.males = self._rank_males(self.males + trained, champion)[: cfg.males]
        self._end_generation(g, champion)

    def _breed(self, g: int, i: int, ranked_m: list, ranked_f: list) -> tuple:
        """The i-th mating of generation g: (the architecture child, registered as g{g}-c{i}; the
        predictor child of the same mating, or None without females)."""
        cfg, tb = self.cfg, self.arch_tb
        # the pair's female: the i-th in mating order (a random one when pairing is random)
        female = (random.choice(ranked_f) if cfg.pairing == "random" else ranked_f[i % len(ranked_f)]) \
            if self.fem else None
        if cfg.mode == "female":
            child, parents = tb.individual(), []
        else:
            mother, partner = self._parents(i, ranked_m, female)
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
        child.key = f"g{g}-c{i}"
        rec = self._new(child.key, decode(child, self.preset), g, "child", parents)
        pred = None
        if self.fem:  # the predictor child of the same mating: the female with a top-half female
            top_f = ranked_f[: max(2, len(ranked_f) // 2)]
            pred = self.fem.child(female, random.choice([x for x in top_f if x is not female] or top_f))
            rec.female, rec.female_child = str(female), str(pred)
        return child, pred

    def _parents(self, i: int, ranked_m: list, female) -> tuple:
        """The two male parents of the i-th child (see docs/ALGORITHM.md, "Mating"): the i-th ranked
        male and a father from the top half. choice: the female judges up to --choice-sample top-half
        males (by the true target where it is known, else her own calibrated prediction) and takes the
        best; ranked: a random top-half male; random: any two males."""
        cfg = self.cfg
        if cfg.pairing == "random":
            pair = random.sample(ranked_m, 2) if len(ranked_m) >= 2 else ranked_m * 2
            return pair[0], pair[1]
        mother = ranked_m[i % len(ranked_m)]
        top = ranked_m[: max(2, len(ranked_m) // 2)]
        fathers = [m for m in top if m is not mother] or top
        if cfg.pairing == "choice" and female is not None and self._judge(female) is not None:
            sample = random.sample(fathers, min(cfg.choice_sample, len(fathers)))
            recs = [self.ledger.records[m.key] for m in sample]
            unknown = [r for r in recs if r.target is None and r.features is not None]
            guess = dict(zip((r.key for r in unknown), self.fem.predict_losses(female, self.fem_archive(), unknown)))
            def worth(m):  # the truth where it is known, else her calibrated prediction
                r = self.ledger.records[m.key]
                w = r.target if r.target is not None else guess.get(m.key, INF)
                return (w if math.isfinite(w) else INF, ranked_m.index(m))
            return mother, min(sample, key=worth)
        return mother, random.choice(fathers)

    def _credit(self, keys: list[str]) -> None:
        """A female is credited with each child of hers that was fully trained: the fraction of the
        rest of the archive (as it stands after this generation's promotions) that the child beats."""
        if not self.fem:
            return
        for k in keys:
            rec = self.ledger.records[k]
            if rec.female is None or not rec.fully_trained or not math.isfinite(rec.target):
                continue
            others = [r.target for r in self.ledger.archive if r is not rec]
            q = float(np.mean([t > rec.target for t in others])) if others else 0.5
            self.credit.setdefault(rec.female, []).append(q)

    def _load_prior(self) -> None:
        """The warm-start records; the journal keeps their keys, so a resumed search uses the same."""
        from evo.warmstart import load_warm_start

        cfg = self.cfg
        recs = load_warm_start(cfg.warm_start, early_steps=self.E, full_steps=self.F, features=self.fem.features,
                               tracking_uri=getattr(self.tracker, "uri", None) or cfg.tracking_uri,
                               experiment=cfg.experiment, preset=self.preset.name,
                               exclude={self.ckpt.run_id} if getattr(self.ckpt, "run_id", None) else frozenset())
        if cfg.table:  # a search by lookup must not learn its own table's answers
            from evo.table import load_table

            rows = {genes_key(g) for g in load_table(cfg.table).space().row_genes}
            shared = [r.key for r in recs if genes_key(r.genes) in rows]
            if shared:
                raise ValueError(f"--warm-start {cfg.warm_start} shares {len(shared)} architectures with --table "
                                 f"{cfg.table} (e.g. {shared[0]}): the females would know the answers; split the "
                                 f"table first (python -m evo.bench split, docs/TABLES.md)")
        keys = self.ckpt.once("warm", lambda: [r.key for r in recs])
        by_key = {r.key: r for r in recs}
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise ValueError(f"--warm-start {cfg.warm_start}: {len(missing)} of the {len(keys)} curves this search "
                             f"started with are gone (e.g. {missing[0]}); resume needs the same curves")
        self.prior = [by_key[k] for k in keys]

    def fem_archive(self) -> list[Evaluation]:
        """What the females learn from: the warm-start records, less any architecture this search has
        evaluated itself (a curve is never in the archive twice), then the search's own archive."""
        return [r for r in self.prior if genes_key(r.genes) not in self.seen] + self.ledger.archive

    def _judge(self, champion):
        """The champion, when there is an archive to calibrate her on (else the early loss ranks)."""
        return champion if self.ledger.archive or self.prior else None

    def _promote(self, g: int, children: list, champion) -> tuple[list[str], list[str]]:
        """The ranker's top `promote` children (with rungs: the top 1/eta, for the first rung) plus
        `promote_random` drawn from the rest: (chosen, best first; the random ones)."""
        champion = self._judge(champion)
        recs = [r for r in (self.ledger.records[c.key] for c in children) if r.early_done]
        if champion is not None:
            score = self.fem.raw(champion, recs)
            shown = self.fem.predict_losses(champion, self.fem_archive(), recs)
            for rec, s, p in zip(recs, score, shown):
                rec.score, rec.predicted = float(s), float(p)
        else:
            for rec in recs:
                rec.score = rec.predicted = rec.early_val
        order = [r.key for r in sorted(recs, key=lambda r: (r.score, r.key))]
        n = self._keep(len(order), final=not self.rung_steps())
        chosen, rest = order[:n], order[n:]
        lucky = random.sample(rest, min(self.cfg.promote_random, len(rest)))
        judge = str(champion) if champion is not None else "early-val-loss"
        for rec in recs:
            rec.role = "promoted" if rec.key in chosen else "random" if rec.key in lucky else "early-only"
            self.ckpt.once(f"pred/{rec.key}", lambda rec=rec: self.tracker.log_decision(
                rec.key, rec.run_id, rec.role, judge, rec.predicted, rec.score))
        return chosen, lucky

    def rung_steps(self) -> list[int]:
        """The rungs' budgets between the early and the full one: E * eta^k, k = 1 .. rungs."""
        return [s for s in (self.E * self.cfg.eta ** k for k in range(1, self.cfg.rungs + 1)) if s < self.F]

    def _rungs(self, ranked: list[str], champion) -> list[str]:
        """Successive halving between the early and the full budget: the chosen candidates continue
        to each rung, and the champion, applied to the curve so far, keeps the best 1/eta of them (at
        least `promote`, exactly `promote` at the last rung). Returns the keys that go on to the full
        budget (the random ones of `_promote` go there unjudged, by the caller)."""
        judge = self._judge(champion)
        for steps in self.rung_steps():
            recs = [self.ledger.records[k] for k in ranked]
            self._run([self._task(f"{r.key}/r{steps}", r.genes, steps, "rung", load=r.state_file) for r in recs
                       if r.early_done])
            alive = [r for r in recs if r.early_done]
            if judge is not None and alive:
                score = self.fem.raw(judge, [Evaluation(r.key, r.genes, features=self._features(r, steps))
                                             for r in alive])
                score = [float(x) if np.isfinite(x) else INF for x in score]
            else:  # no archive yet: the validation loss at the rung
                score = [r.early["val_losses"][-1] if r.early.get("val_losses") else INF for r in alive]
            order = [r.key for _, r in sorted(zip(score, alive), key=lambda x: (x[0], x[1].key))]
            keep = order[: self._keep(len(order), final=steps == self.rung_steps()[-1])]
            for r in recs:
                if r.key not in keep:
                    r.role = f"rung@{steps}"
                    self.ckpt.once(f"rung/{r.key}", lambda r=r: self.tracker.log_decision(r.key, r.run_id, r.role))
            self._release([r.key for r in recs if r.key not in keep])
            ranked = keep
        return ranked

    def _keep(self, n: int, final: bool) -> int:
        """Candidates a judging step keeps: `promote` at the last one, else n / eta (at least `promote`)."""
        return self.cfg.promote if final else max(self.cfg.promote, -(-n // self.cfg.eta))

    def _rank_males(self, pop: list, champion) -> list:
        """Best first. male: early val loss; combined: NSGA-II fronts on (early val loss, target),
        the target being the true one once fully trained and the champion's prediction before."""
        champion = self._judge(champion)
        recs = [self.ledger.records[i.key] for i in pop]
        early = [r.early_val for r in recs]
        target = [r.target for r in recs]
        pending = [j for j, t in enumerate(target) if t is None and math.isfinite(early[j])]
        if self.cfg.mode == "combined" and champion is not None and pending:
            shown = self.fem.predict_losses(champion, self.fem_archive(), [recs[j] for j in pending])
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
               "archive/warm": len(self.prior),
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
            "lineage": [{"key": r.key, "generation": r.generation, "parents": r.parents, "female": r.female,
                         "female_child": r.female_child, "role": r.role,
                         "target": r.target if r.target is not None and math.isfinite(r.target) else None}
                        for r in self.ledger.records.values() if r.female is not None],
            "credit": {f: c for f, c in self.credit.items()},
            "compute": dict(self.ledger.compute),
            "history": self.ledger.history,
            "logbook": list(self.logbook),
        }

