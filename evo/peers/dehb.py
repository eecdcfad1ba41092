"""DEHB (Awad et al. 2021, arXiv:2105.09821): differential evolution run inside Hyperband's brackets,
through the `dehb` package's ask/tell interface, over the same unit cube as the other peers.

Each (configuration, fidelity) DEHB asks for is trained from scratch to that many steps as its own
record (DEHB does not continue a training), and DEHB is told the record's best validation loss at
that fidelity (the target every peer uses, here cut at the fidelity); a failed or diverged training
is told as `FAILED_FITNESS`. The fidelities are DEHB's own: the full budget F divided by powers of
eta down to the early budget E, rounded to whole steps (tiny: E 60, F 600, eta 3 gives 67, 200 and
600 steps; DEHB's smallest fidelity is F / eta^k, not E itself).

The preset's baseline is not trained first, as the other peers do: DEHB 0.1.2 draws its initial
populations itself and only takes results for configurations it asked for, so there is no clean
way to enqueue one.

`dehb` is not among the project's dependencies: its metadata pins numpy < 2, so it is installed
without dependencies (see `INSTALL`); pandas and pyarrow come with mlflow, dask and distributed with
the `test` (or `distributed`) extras.
"""
from __future__ import annotations

import math
import tempfile

from evo.evaluate import failed
from evo.genome import decode
from evo.peers.base import Peer

INSTALL = "pip install --no-deps dehb==0.1.2 ConfigSpace==1.2.2 loguru==0.7.3 more-itertools"
FAILED_FITNESS = 1e6
"""What DEHB is told for a training that failed or diverged: worse than any loss, but finite."""


def fitness(res: dict) -> float:
    """The value DEHB minimises: the best validation loss of a training (FAILED_FITNESS if none)."""
    loss = res.get("best_val_loss")
    if failed(res) or loss is None or not math.isfinite(loss):
        return FAILED_FITNESS
    return float(loss)


class DEHBPeer(Peer):
    name, order = "dehb", 4
    options = {"eta": 3}
    requires = "dehb"

    def plan(self):
        try:
            import ConfigSpace
            from dehb import DEHB
            from loguru import logger
        except ImportError as e:
            raise ImportError(f"the dehb peer needs the dehb package ({e}); install it without its "
                              f"dependencies, as its metadata pins numpy<2: {INSTALL}") from e

        names = self.preset.gene_names
        cs = ConfigSpace.ConfigurationSpace(seed=self.cfg.seed)
        cs.add([ConfigSpace.UniformFloatHyperparameter(f"u_{n}", 0.0, 1.0) for n in names])
        # DEHB writes a log file (and, with save_freq "incumbent", its state) under output_path:
        # a temporary folder, so that nothing lands in the working directory
        with tempfile.TemporaryDirectory(prefix="dimorph-dehb-") as out:
            opt = DEHB(cs=cs, min_fidelity=self.E, max_fidelity=self.F, eta=self.opts["eta"], n_workers=1,
                       seed=int(self.cfg.seed), output_path=out, save_freq="end", log_level="WARNING")
            self.fidelities = sorted({self.steps(f) for f in opt.fidelities})
            try:
                while not self.runner.spent():
                    job = opt.ask()
                    u = [float(job["config"][f"u_{n}"]) for n in names]
                    steps, key = self.steps(job["fidelity"]), self.key()
                    res = yield from self.train(key, decode(u, self.preset), steps,
                                                "trial" if steps >= self.F else f"trial@{steps}")
                    if res is None:  # it did not fit in the budget: nothing more starts
                        break
                    if steps < self.F:
                        self.ledger.release(self.ledger.records[key])  # never continued
                    cost = 0.0 if res.get("error") else float(res.get("flops", 0.0))
                    opt.tell(job, {"fitness": fitness(res), "cost": cost})
            finally:
                logger.remove()  # DEHB's handlers (its log file in `out`)

    def steps(self, fidelity: float) -> int:
        """A DEHB fidelity as training steps."""
        return max(1, min(self.F, int(round(float(fidelity)))))
