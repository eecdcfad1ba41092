"""ASHA: Optuna's SuccessiveHalvingPruner over the unit cube (TPE or random sampling), trials
trained in rungs that continue from saved states."""
from __future__ import annotations

from evo.evaluate import failed
from evo.genome import decode
from evo.peers.base import Peer


class ASHA(Peer):
    name, order = "asha", 1
    options = {"sampler": "tpe", "reduction_factor": 3, "min_resource": None}

    def rungs(self) -> list[int]:
        """The rung budgets: min_resource * eta^k below the full budget, then the full budget."""
        eta, r = self.opts["reduction_factor"], self.opts["min_resource"] or self.E
        out = []
        while r < self.F:
            out.append(int(r))
            r *= eta
        return out + [self.F]

    def pruner(self, optuna):
        """Optuna's pruner that judges the trials at each rung."""
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=self.rungs()[0],
                                                      reduction_factor=self.opts["reduction_factor"])

    def plan(self):
        import optuna
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = (optuna.samplers.TPESampler(seed=self.cfg.seed) if self.opts["sampler"] == "tpe"
                   else optuna.samplers.RandomSampler(seed=self.cfg.seed))
        pruner = self.pruner(optuna)
        # a fixed name: Optuna's HyperbandPruner puts a trial in a bracket by a hash of the study's
        # name, which is random unless given, so the same seed would not give the same search
        study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner,
                                    study_name=f"dimorph-{self.name}-seed{self.cfg.seed}")
        names = self.preset.gene_names
        study.enqueue_trial({f"u_{n}": u for n, u in zip(names, self.preset.encode(self.preset.baseline))})
        while not self.runner.spent():
            trial = study.ask()
            genes = decode([trial.suggest_float(f"u_{n}", 0.0, 1.0) for n in names], self.preset)
            key, reported, outcome, rec = self.key(), 0, None, None
            for r in self.rungs():
                if self.runner.spent():
                    break
                res = yield from self.train(key, genes, r, "baseline" if trial.number == 0 else "trial")
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
                    rec.role = f"pruned@{r}"
                    self.ledger.release(rec)
                    self.runner.decide(f"prune/{rec.key}", rec)
                    self.runner.snapshot()
                    break
            if outcome is not None:
                study.tell(trial, state=outcome)
            elif rec is not None and rec.fully_trained:
                study.tell(trial, rec.target)
            else:  # the budget ran out inside this trial
                if rec is not None:
                    self.ledger.release(rec)
                study.tell(trial, state=TrialState.FAIL)
