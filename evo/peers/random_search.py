"""Random search: the baseline first, then architectures sampled uniformly, each trained to the full budget."""
from __future__ import annotations

import random

from evo.peers.base import Peer


class RandomSearch(Peer):
    name, order = "random", 0

    def plan(self):
        rng = random.Random(self.cfg.seed)
        first = True
        while not self.runner.spent():
            genes = dict(self.preset.baseline) if first else self.preset.sample(rng)
            yield from self.train(self.key(), genes, self.F, "baseline" if first else "random")
            first = False
