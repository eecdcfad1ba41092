"""Pure genome code: a male is a vector in [0, 1]^d that decodes into a valid model + training config.

Nothing here builds a model or reads data or tables: costs and spaces are in evo.space."""
from __future__ import annotations

import json
import random
import zlib
from typing import Sequence

from deap import base, tools

from evo.creator_types import ensure_creator_types
from models.presets import Preset

ensure_creator_types()
from deap import creator  # noqa: E402  (types exist only after ensure_creator_types)


def decode(genome: Sequence[float], preset: Preset) -> dict:
    """Genome (unit vector) -> gene values from the preset's search space."""
    if len(genome) != len(preset.space):
        raise ValueError(f"genome has {len(genome)} genes, preset {preset.name!r} needs {len(preset.space)}")
    return preset.decode([min(1.0, max(0.0, float(u))) for u in genome])


def genes_key(genes: dict) -> str:
    """Canonical text of a decoded genome (equal architectures give equal keys)."""
    return json.dumps(genes, sort_keys=True, default=float)


def eval_seed(run_seed: int, genes: dict) -> int:
    """Training seed from (run seed, decoded genome): independent of order, worker and generation."""
    return zlib.crc32(f"{run_seed}|{genes_key(genes)}".encode()) & 0x7FFFFFFF


def make_arch_toolbox(preset: Preset, indpb: float | None = None) -> base.Toolbox:
    """The male toolbox: bounded SBX crossover and polynomial mutation on the unit cube."""
    n = len(preset.space)
    tb = base.Toolbox()
    tb.register("individual", lambda: creator.ArchIndividual(random.random() for _ in range(n)))
    tb.register("mate", tools.cxSimulatedBinaryBounded, eta=10.0, low=0.0, up=1.0)
    tb.register("mutate", tools.mutPolynomialBounded, eta=10.0, low=0.0, up=1.0,
                indpb=indpb if indpb is not None else 2.0 / n)
    return tb


def from_genes(genes: dict, preset: Preset):
    """An ArchIndividual placed at the centre of the given genes' bins."""
    return creator.ArchIndividual(preset.encode(genes))
