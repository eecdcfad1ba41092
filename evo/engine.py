"""A search of one of the four modes, assembled: the checkpoint, the ledger, the co-evolution policy
(evo.coevolution, or evo.steady with --steady) and the Runner that drives it (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

from evo.checkpoint import Checkpoint
from evo.config import Config
from evo.ledger import Ledger
from evo.runner import Runner
from evo.space import search_preset


class Search:
    """One search. `executor.run(tasks)` yields results as they finish; `tracker` is the MLflow writer
    (it may be set after construction, once the checkpoint has locked the output folder)."""

    def __init__(self, cfg: Config, executor, tracker, on_eval=None, on_generation=None, ckpt=None):
        from evo.coevolution import CoEvolution
        from evo.steady import SteadyCoEvolution

        self.cfg = cfg
        self.preset = search_preset(cfg)
        self.E, self.F = self.preset.early_steps, self.preset.full_steps
        self.ckpt = ckpt or Checkpoint(cfg.out_dir, cfg.search_fields(), resume=cfg.resume)
        self.ledger = Ledger(self.F)  # records, archive, compute, history, state files
        self.runner = Runner(cfg, self.preset, executor, tracker, self.ckpt, self.ledger, resumed=cfg.resume,
                             on_eval=on_eval)
        policy = SteadyCoEvolution if cfg.steady and cfg.mode != "baseline" else CoEvolution
        self.policy = policy(cfg, self.preset, self.ledger, self.ckpt, on_generation=on_generation,
                             tracker_uri=lambda: getattr(self.runner.tracker, "uri", None))
        self.runner.attach(self.policy)

    @property
    def tracker(self):
        return self.runner.tracker

    @tracker.setter
    def tracker(self, tracker) -> None:
        self.runner.tracker = tracker

    # what readers of a search use (evo.report, evo.run, evo.experiment)
    fem = property(lambda self: self.policy.fem)
    males = property(lambda self: self.policy.males)
    credit = property(lambda self: self.policy.credit)
    logbook = property(lambda self: self.policy.logbook)
    wait_s = property(lambda self: self.runner.wait_s)
    exhausted = property(lambda self: self.runner.exhausted)

    def run(self) -> dict:
        """Run every generation (replaying journaled work on resume); returns the final state."""
        self.runner.run(self.policy)
        return self.state()

    def state(self) -> dict:
        """Everything a reader of the checkpoint needs (JSON-able)."""
        return self.policy.state()
