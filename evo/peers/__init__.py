"""Peer search methods at the same training-FLOPs budget as the engine's modes.

random: sample, train to the full budget, keep the best. asha: Optuna's SuccessiveHalvingPruner
over the same unit cube, trials trained in rungs that continue from saved states. evolution:
regularised (aging) evolution, Real et al. 2019 (arXiv:1802.01548), with the males' mutation. All
are policies on the Runner (evo.runner): the preset's space, the trainer through the executor, one
MLflow child run per architecture, every training journaled (a rerun replays it), and the budget
rule of the Runner (each training's cost is known before it starts; a method stops at the first
that would take it past the budget, so it never spends more).

Each method is one module of this package with a `Peer` subclass (evo.peers.base); it is found by
its `name`, so adding a method is adding one file.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil

from evo.checkpoint import Checkpoint
from evo.config import Config
from evo.ledger import Ledger
from evo.peers.base import Peer
from evo.runner import Runner
from evo.space import search_preset


def _discover() -> dict[str, type]:
    for m in pkgutil.iter_modules(__path__):
        if m.name != "base":
            importlib.import_module(f"{__name__}.{m.name}")
    found = [c for c in _subclasses(Peer) if c.name]
    return {c.name: c for c in sorted(found, key=lambda c: (c.order, c.name))}


def _subclasses(cls) -> list[type]:
    return [s for c in cls.__subclasses__() for s in (c, *_subclasses(c))]


METHODS = _discover()
PEERS = tuple(METHODS)


def missing(method: str) -> str | None:
    """The package a peer method needs that is not installed (None: it can run)."""
    need = METHODS[method].requires if method in METHODS else None
    return need if need and importlib.util.find_spec(need) is None else None


class PeerSearch:
    """One peer search assembled: its checkpoint, ledger, policy and Runner."""

    def __init__(self, cfg: Config, method: str, executor, tracker, ckpt=None, **opts):
        if method not in METHODS:
            raise ValueError(f"peer method must be one of {', '.join(PEERS)}, got {method!r}")
        self.cfg, self.method, self.opts = cfg, method, opts
        self.preset = search_preset(cfg)
        self.E, self.F = self.preset.early_steps, self.preset.full_steps
        search = {k: v for k, v in cfg.search_fields().items()
                  if k in ("preset", "seed", "budget_flops", "early_frac", "full_steps", "threads")}
        self.resumed = ckpt is None and (cfg.out_dir / "checkpoint.json").exists()
        self.ckpt = ckpt or Checkpoint(cfg.out_dir, {**search, "method": method, **opts}, resume=self.resumed)
        self.policy = METHODS[method](cfg, self.preset, None, **opts)
        self.ledger = self.policy.ledger = Ledger(self.F, every_training=self.policy.every_training)
        self.runner = Runner(cfg, self.preset, executor, tracker, self.ckpt, self.ledger, resumed=self.resumed)
        self.runner.attach(self.policy)

    tracker = property(lambda self: self.runner.tracker)
    exhausted = property(lambda self: self.runner.exhausted)

    def run(self) -> None:
        """Search until the budget is spent (replaying journaled trainings)."""
        self.runner.run(self.policy)

    def state(self) -> dict:
        return self.policy.state()


def run_peer(cfg: Config, method: str, tracker, executor, **opts) -> dict:
    """Run (or resume) one peer search; returns its summary (same layout as evo.run's)."""
    from evo.report import best_numbers

    search = PeerSearch(cfg, method, executor, tracker, **opts)
    params = {"mode": method, "preset": cfg.preset, "seed": cfg.seed, "budget_flops": cfg.budget_flops,
              "preset.full_steps": search.F, "preset.early_steps": search.E, "data": cfg.data,
              **{f"peer.{k}": v for k, v in opts.items()}}
    params = {k: v for k, v in params.items() if v is not None}  # unset: not logged as "None"
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

