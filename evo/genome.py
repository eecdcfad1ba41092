"""Pure genome code: a male is a vector in [0, 1]^d that decodes into a valid model + training config."""
from __future__ import annotations

import json
import random
import zlib
from dataclasses import replace
from typing import Sequence

from deap import base, tools

from evo.creator_types import ensure_creator_types
from models.presets import Preset, get_preset

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


def search_preset(cfg) -> Preset:
    """The space a run searches: its preset with the config's budget overrides (or --table's space)."""
    if cfg.table:
        from evo.table import load_table
        return load_table(cfg.table).space()
    p = get_preset(cfg.preset)
    changes = {k: v for k, v in (("full_steps", cfg.full_steps), ("early_frac", cfg.early_frac)) if v is not None}
    return replace(p, **changes) if changes else p


def from_genes(genes: dict, preset: Preset):
    """An ArchIndividual placed at the centre of the given genes' bins."""
    return creator.ArchIndividual(preset.encode(genes))


def step_cost(cfg, preset: Preset, genes: dict) -> float:
    """What one training step of `genes` is charged, known before it runs: training FLOPs (exactly
    what the trainer will count), or the table's cost per step for --table. The engine checks it
    before every evaluation so that a search never spends more than --budget-flops."""
    if cfg.table:
        from evo.table import load_table
        t = load_table(cfg.table)
        return float(t.cost_per_step[t.row_of(genes)])
    return _live_step_flops(preset, genes_key(genes), cfg.data)


_STEP_FLOPS: dict = {}


def _live_step_flops(preset: Preset, key: str, data: str | None) -> float:
    cache_key = (repr(preset), key, data)
    if cache_key not in _STEP_FLOPS:
        import torch

        from evo.evaluate import token_data
        from models.gpt import GPT

        gpt_cfg, tc = preset.configs(json.loads(key), token_data(data, preset).vocab_size)
        with torch.device("meta"):  # counts parameters without allocating them
            model = GPT(gpt_cfg)
        _STEP_FLOPS[cache_key] = model.flops_per_token() * tc.batch_size * preset.block_size
    return _STEP_FLOPS[cache_key]
