"""What the peer methods share: a plan that trains one architecture at a time, every training
journaled and logged once, a history point and a snapshot after each (evo.runner does the work).

A peer is one file in evo/peers/ with a subclass of `Peer` that sets `name` and writes `plan()`;
evo.peers finds it by its name (docs/ARCHITECTURE.md "Adding a method").
"""
from __future__ import annotations

from evo.ledger import INF, Evaluation
from evo.scheduler import WAIT, Planned


class Peer(Planned):
    """Base of the peer methods (random search, ASHA, aging evolution, ...)."""

    name = ""
    order = 100
    """where the method is listed among the peers (lowest first)"""
    options: dict = {}
    """the method's options and their defaults (`evo.experiment`'s flags set them)"""
    requires: str | None = None
    """a package the method imports when it runs, not one of the project's dependencies"""
    every_phase_is_outcome = True  # every rung's losses are logged: a peer decides between rungs
    every_training = True  # the ledger's history gets a point after every training

    def __init__(self, cfg, preset, ledger, **opts):
        unknown = sorted(set(opts) - set(self.options))
        if unknown:
            raise ValueError(f"peer method {self.name!r} has no option {unknown[0]!r}; its options: "
                             f"{', '.join(self.options) or 'none'}")
        self.cfg, self.preset, self.ledger, self.opts = cfg, preset, ledger, {**self.options, **opts}
        self.E, self.F = preset.early_steps, preset.full_steps
        self._refused = False

    @property
    def method(self) -> str:
        return self.name

    def key(self) -> str:
        """The next architecture's key: method initial and a running number."""
        return f"{self.name[0]}{len(self.ledger.records):04d}"

    def train(self, key: str, genes: dict, steps: int, role: str, parents=()):
        """Train `key` up to `steps` (continuing from its last state), as `yield from`: returns the
        result, or None when the budget had no room for it (then nothing more starts)."""
        rec = self.ledger.records.get(key)
        new = rec is None
        if new:
            rec = self.ledger.new(key, genes, role=role, parents=parents)
        phase = "straight" if not rec.result and steps == self.F else "early" if steps < self.F else "full"
        self._refused = False
        yield self.runner.task(rec, steps, phase, f"/s{steps}")
        yield WAIT
        if self._refused:
            if new:
                self.ledger.discard(key)
            return None
        return rec.result

    def refused(self, task) -> None:
        self._refused = True

    def tell(self, task, rec: Evaluation) -> None:
        compute = self.ledger.compute
        self.runner.log_generation(compute["trainings"], {
            "arch/best_val_loss": self.ledger.history[-1]["best_val_loss"], "cost/flops": compute["flops"],
            "cost/seconds": compute["seconds"], "cost/full_trainings": compute["full_trainings"]})
        self.runner.snapshot()

    def state(self) -> dict:
        """JSON-able snapshot: records, compute, history and the best architecture."""
        return {"method": self.name, "compute": dict(self.ledger.compute), "history": self.ledger.history,
                "records": [{"key": r.key, "genes": r.genes, "target": r.target,
                             "steps": (r.result or {}).get("steps"), "role": r.role}
                            for r in self.ledger.records.values()],
                "best": self.ledger.best_entry()}


def target(rec: Evaluation) -> float:
    """A record's target, inf while there is none."""
    return INF if rec.target is None else rec.target
