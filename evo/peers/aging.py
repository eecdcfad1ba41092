"""Regularised (aging) evolution, Real et al. 2019 (arXiv:1802.01548), with the males' mutation:
a tournament of `sample` picks the parent, the child replaces the oldest of `population`."""
from __future__ import annotations

import random
from collections import deque

from evo.genome import decode, genes_key, make_arch_toolbox
from evo.peers.base import Peer, target


class AgingEvolution(Peer):
    name, order = "evolution", 2
    options = {"population": 8, "sample": 3}

    def plan(self):
        P, S = self.opts["population"], self.opts["sample"]
        tb = make_arch_toolbox(self.preset)  # bounded polynomial mutation, as the males
        self.pop: deque = deque()
        self.seen: set[str] = set()
        yield from self.add(self.preset.encode(self.preset.baseline), "baseline")
        while not self.runner.spent() and len(self.pop) < P:
            yield from self.add(tb.individual(), "init")
        while not self.runner.spent():
            sample = random.sample(list(self.pop), min(S, len(self.pop)))
            pkey, parent = min(sample, key=lambda kv: (target(self.ledger.records[kv[0]]), kv[0]))
            child = tb.clone(parent)
            for _ in range(20):  # re-mutate a child that decodes to an architecture already trained
                tb.mutate(child)
                if genes_key(decode(child, self.preset)) not in self.seen:
                    break
            yield from self.add(list(child), "child", [pkey])

    def add(self, u, role: str, parents=()):
        key, genes = self.key(), decode(u, self.preset)
        self.seen.add(genes_key(genes))
        if (yield from self.train(key, genes, self.F, role, parents)) is None:
            return
        self.pop.append((key, u))
        if len(self.pop) > self.opts["population"]:
            self.pop.popleft()  # aging: the oldest dies, not the worst
