"""The co-evolution policy: males (architectures) and females (predictors), for all four modes.

A plan on the Runner (evo.scheduler.Planned): generation 0 seeds the archive, then each generation
breeds `offspring` children (one architecture and one predictor child per mating, evo.strategies),
trains them for the early budget, promotes some (evo.promotion) to the full budget, credits the
females and lets both populations select. docs/ALGORITHM.md says what each step does and why;
evo.steady drives the same policy steady-state.
"""
from __future__ import annotations

import math
import random

import numpy as np
from deap import tools

from evo.females import Females
from evo.genome import decode, from_genes, genes_key, make_arch_toolbox
from evo.ledger import INF, Evaluation
from evo.promotion import Halving
from evo.scheduler import WAIT, Planned
from evo.strategies import MODES, PAIRINGS
from primitives.features import curve_features

BIG = 1e9  # a male's objective when it has none (failed, or no target yet)


class CoEvolution(Planned):
    """One search of --mode baseline | male | female | combined (see the module docstring)."""

    name = "coevolution"

    def __init__(self, cfg, preset, ledger, ckpt, tracker_uri=lambda: None, on_generation=None):
        self.cfg, self.preset, self.ledger, self.ckpt = cfg, preset, ledger, ckpt
        self.mode, self.pairing = MODES[cfg.mode], PAIRINGS[cfg.pairing]
        self.E, self.F = preset.early_steps, preset.full_steps
        self.arch_tb = make_arch_toolbox(preset)
        self.fem = (Females(cfg.arch_features, rule=cfg.champion, fitness=cfg.female_fitness,
                            size=cfg.offspring, picks=cfg.promote) if self.mode.females else None)
        self.halving = Halving(cfg.promote, cfg.promote_random, cfg.rungs, cfg.eta)
        self.seen: set[str] = set()   # genes_key of every architecture evaluated so far
        self.males: list = []
        self.prior: list[Evaluation] = []  # --warm-start records: the females' archive only
        self.credit: dict[str, list[float]] = {}  # female formula -> how her fully trained children did
        self.logbook = tools.Logbook()
        self.tracker_uri = tracker_uri  # where --warm-start looks for earlier searches
        self.on_generation = on_generation or (lambda g, row: None)

    @property
    def exhausted(self) -> bool:
        return self.runner.exhausted

    # -- the plan ---------------------------------------------------------------------------------
    def plan(self):
        if self.fem and self.cfg.warm_start:
            self._load_prior()
        if self.mode.straight:
            base = self.new("baseline", dict(self.preset.baseline), 0, "baseline")
            yield self.runner.task(base, self.F, "straight")
            yield WAIT
            self.end_generation(0, None)
            return
        yield from self.generation0()
        yield from self.generations()

    def generations(self):
        for g in range(1, self.cfg.gens + 1):
            if self.exhausted:
                break
            yield from self.generation(g)

    def new(self, key: str, genes: dict, gen: int, role: str, parents=()) -> Evaluation:
        self.seen.add(genes_key(genes))
        return self.ledger.new(key, genes, gen, role, parents)

    def early(self, keys: list[str]):
        for k in keys:
            yield self.runner.task(self.ledger.records[k], self.E, "early")
        yield WAIT

    def continued(self, keys: list[str]):
        """Continue those of `keys` whose early phase did not fail to the full budget."""
        for k in keys:
            if self.ledger.records[k].early_done:
                yield self.runner.task(self.ledger.records[k], self.F, "full", "/full")
        yield WAIT

    def release(self, keys: list[str]) -> None:
        """These early-trained architectures will not be continued: their states go."""
        for k in keys:
            self.ledger.release(self.ledger.records[k])

    def generation0(self):
        cfg = self.cfg
        bracket = cfg.start == "bracket"
        inds = [from_genes(self.preset.baseline, self.preset)]
        inds += [self.arch_tb.individual() for _ in range((cfg.bootstrap * cfg.eta if bracket else cfg.bootstrap) - 1)]
        for i, ind in enumerate(inds):
            ind.key = f"g0-b{i}"
            self.new(ind.key, decode(ind, self.preset), 0, "baseline" if i == 0 else "bootstrap")
        extra = []
        if self.mode.males:
            extra = [self.arch_tb.individual() for _ in range(max(0, cfg.males - len(inds)))]
            for i, ind in enumerate(extra):
                ind.key = f"g0-i{i}"
                self.new(ind.key, decode(ind, self.preset), 0, "init")
        yield from self.early([i.key for i in inds + extra])
        full = self.first_bracket([i.key for i in inds]) if bracket else [i.key for i in inds]
        yield from self.continued(full)
        self.release([i.key for i in inds + extra if i.key not in full])  # early-trained only
        if self.mode.males:
            trained = [i for i in inds + extra if not self.ledger.records[i.key].pending]
            self.males = self.rank_males(trained, None)[: cfg.males]
        champion = None
        if self.fem:
            self.fem.init(cfg.females)
            self.fem.evolve(self.fem_archive(), cfg.pred_steps, cfg.females)
            champion = self.fem.champion()
        self.end_generation(0, champion)

    def first_bracket(self, keys: list[str]) -> list[str]:
        """--start bracket: which of generation 0's early-trained architectures are fully trained
        (evo.promotion.Halving.bracket, by early validation loss: there is no archive yet)."""
        recs = [r for r in (self.ledger.records[k] for k in keys) if r.early_done]
        for r in recs:
            r.score = r.predicted = r.early_val
        top = -(-self.cfg.bootstrap // self.cfg.eta)
        chosen, lucky = self.halving.bracket([r.score for r in recs], [r.key for r in recs], top, always=keys[:1])
        for r in recs:
            if r.key not in chosen:
                r.role = "early-only"
            elif r.key in lucky:
                r.role = "random"
            self.runner.decide(f"pred/{r.key}", r, "early-val-loss", r.predicted, r.score)
        return chosen

    def generation(self, g: int):
        cfg = self.cfg
        champion = self.fem.champion() if self.fem else None
        children, pred_children = [], []
        ranked_m, ranked_f = self.mating_ranks(champion)
        for i in range(cfg.offspring):
            child, pred = self.breed(g, i, ranked_m, ranked_f)
            children.append(child)
            if pred is not None:
                pred_children.append(pred)
        yield from self.early([c.key for c in children])
        chosen, lucky = self.promote(children, champion)
        promoted = (yield from self.rungs(chosen, champion)) + lucky
        yield from self.continued(promoted)
        self.release([c.key for c in children if c.key not in promoted])
        self.give_credit(promoted)
        if self.fem:
            self.fem.pop = self.fem.pop + pred_children
            self.fem.evolve(self.fem_archive(), max(1, cfg.pred_steps), cfg.females)
            champion = self.fem.champion()
        if self.mode.males:
            trained = [c for c in children if not self.ledger.records[c.key].pending]  # not cut by the budget
            self.males = self.rank_males(self.males + trained, champion)[: cfg.males]
        self.end_generation(g, champion)

    # -- mating -----------------------------------------------------------------------------------
    def mating_ranks(self, champion) -> tuple[list, list]:
        """The males best first, and the females in mating order."""
        ranked_m = self.rank_males(self.males, champion) if self.males else []
        ranked_f = self.fem.mating_order(self.fem.ranked(self.fem.pop), self.credit, self.cfg.credit) \
            if self.fem else []
        return ranked_m, ranked_f

    def breed(self, g: int, i: int, ranked_m: list, ranked_f: list) -> tuple:
        """The i-th mating of generation g: (the architecture child, registered as g{g}-c{i}; the
        predictor child of the same mating, or None without females)."""
        tb = self.arch_tb
        female = self.pairing.female(i, ranked_f) if self.fem else None
        if not self.mode.males:
            child, parents = tb.individual(), []
        else:
            mother, partner = self.pairing.parents(i, ranked_m, female, self)
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
        rec = self.new(child.key, decode(child, self.preset), g, "child", parents)
        pred = None
        if self.fem:  # the predictor child of the same mating: the female with a top-half female
            top_f = ranked_f[: max(2, len(ranked_f) // 2)]
            pred = self.fem.child(female, random.choice([x for x in top_f if x is not female] or top_f))
            rec.female, rec.female_child = str(female), str(pred)
        return child, pred

    def give_credit(self, keys: list[str]) -> None:
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

    # -- judging ----------------------------------------------------------------------------------
    def _load_prior(self) -> None:
        from evo.warmstart import load_prior

        self.prior = load_prior(self.cfg, self.ckpt, self.preset.name, self.E, self.F, self.fem.features, self.tracker_uri())

    def fem_archive(self) -> list[Evaluation]:
        """What the females learn from: the warm-start records, less any architecture this search has
        evaluated itself (a curve is never in the archive twice), then the search's own archive."""
        return [r for r in self.prior if genes_key(r.genes) not in self.seen] + self.ledger.archive

    def judge(self, champion):
        """The champion, when there is an archive to calibrate her on (else the early loss ranks)."""
        return champion if self.ledger.archive or self.prior else None

    def features(self, rec: Evaluation, upto: int | None = None) -> dict:
        """Features of the curve so far, cut at `upto` steps (the early budget unless a rung's)."""
        r = rec.early
        steps = r.get("train_steps") or list(range(1, len(r["train_losses"]) + 1))
        return curve_features(steps, r["train_losses"], r["eval_steps"], r["val_losses"], upto or self.E, self.F,
                              n_params=r.get("n_params"), lr=rec.genes.get("lr"))

    def score(self, recs: list[Evaluation], judge) -> None:
        """Set each record's raw score and its score shown as a loss, by `judge` (or the early loss)."""
        if judge is not None:
            for rec, s, p in zip(recs, self.fem.raw(judge, recs), self.fem.predict_losses(judge, self.fem_archive(), recs)):
                rec.score, rec.predicted = float(s), float(p)
        else:
            for rec in recs:
                rec.score = rec.predicted = rec.early_val

    def promote(self, children: list, champion) -> tuple[list[str], list[str]]:
        """Score the early-trained children; (chosen by the halving rule, best first; the random ones)."""
        judge = self.judge(champion)
        recs = [r for r in (self.ledger.records[c.key] for c in children) if r.early_done]
        self.score(recs, judge)
        chosen, lucky = self.halving.screen([r.score for r in recs], [r.key for r in recs],
                                            final=not self.rung_steps())
        name = str(judge) if judge is not None else "early-val-loss"
        for rec in recs:
            rec.role = "promoted" if rec.key in chosen else "random" if rec.key in lucky else "early-only"
            self.runner.decide(f"pred/{rec.key}", rec, name, rec.predicted, rec.score)
        return chosen, lucky

    def rung_steps(self) -> list[int]:
        return self.halving.rung_steps(self.E, self.F)

    def rungs(self, ranked: list[str], champion):
        """The chosen candidates continue to each rung, where the champion (applied to the curve so
        far) or the rung's validation loss judges them; returns the keys that go on to the full
        budget (the random ones of `promote` go there unjudged, by the caller)."""
        judge = self.judge(champion)
        steps_all = self.rung_steps()
        for steps in steps_all:
            recs = [self.ledger.records[k] for k in ranked]
            for r in recs:
                if r.early_done:
                    yield self.runner.task(r, steps, "rung", f"/r{steps}")
            yield WAIT
            alive = [r for r in recs if r.early_done]
            if judge is not None and alive:
                score = self.fem.raw(judge, [Evaluation(r.key, r.genes, features=self.features(r, steps))
                                             for r in alive])
                score = [float(x) if np.isfinite(x) else INF for x in score]
            else:  # no archive yet: the validation loss at the rung
                score = [r.early["val_losses"][-1] if r.early.get("val_losses") else INF for r in alive]
            keep = self.halving.cut(score, [r.key for r in alive], final=steps == steps_all[-1])
            for r in recs:
                if r.key not in keep:
                    r.role = f"rung@{steps}"
                    self.runner.decide(f"rung/{r.key}", r)
            self.release([r.key for r in recs if r.key not in keep])
            ranked = keep
        return ranked

    def rank_males(self, pop: list, champion) -> list:
        """Best first. male: early val loss; combined: NSGA-II fronts on (early val loss, target),
        the target being the true one once fully trained and the champion's prediction before."""
        champion = self.judge(champion)
        recs = [self.ledger.records[i.key] for i in pop]
        early = [r.early_val for r in recs]
        target = [r.target for r in recs]
        pending = [j for j, t in enumerate(target) if t is None and math.isfinite(early[j])]
        if self.mode.fronts and champion is not None and pending:
            shown = self.fem.predict_losses(champion, self.fem_archive(), [recs[j] for j in pending])
            for j, p in zip(pending, shown):
                target[j] = float(p)
        for ind, e, t in zip(pop, early, target):
            if not math.isfinite(e):
                ind.fitness.values = (BIG, BIG)
            elif not self.mode.fronts:
                ind.fitness.values = (e, e)
            else:
                ind.fitness.values = (e, t if t is not None and math.isfinite(t) else BIG)
        if not self.mode.fronts:
            return sorted(pop, key=lambda i: (i.fitness.values[0], i.key))
        out = []
        for front in tools.sortNondominated(pop, len(pop)):
            tools.emo.assignCrowdingDist(front)
            out += sorted(front, key=lambda i: (-i.fitness.crowding_dist, i.key))
        return out

    # -- what the Runner logs ---------------------------------------------------------------------
    def log_extras(self, rec: Evaluation, task) -> dict:
        if task.phase != "early":
            return {}
        return {"features": rec.features, "early_val": rec.early_val, "female": rec.female,
                "female_child": rec.female_child}

    def end_generation(self, g: int, champion) -> None:
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
        self.runner.log_generation(g, row)
        self.on_generation(g, row)
        self.runner.snapshot()

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
