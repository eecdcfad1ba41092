"""BOHB-style search: Optuna's TPE sampler with its HyperbandPruner (brackets of successive halving
from the early budget to the full one, Li et al. 2018, arXiv:1603.06560; TPE in place of BOHB's
kernel density model, Falkner et al. 2018, arXiv:1807.01774). Trials are trained in rungs that
continue from saved states, as ASHA's are; each bracket prunes at its own rungs."""
from __future__ import annotations

from evo.peers.asha import ASHA


class TPEHyperband(ASHA):
    name, order = "hyperband", 3

    def pruner(self, optuna):
        return optuna.pruners.HyperbandPruner(min_resource=self.rungs()[0], max_resource=self.F,
                                              reduction_factor=self.opts["reduction_factor"])
