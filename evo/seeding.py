"""One place that seeds a search's process-wide random number generators."""
from __future__ import annotations

import random
import sys

import numpy as np


def seed_everything(seed: int, torch: bool = True) -> None:
    """Seed random (DEAP draws from it), numpy and, unless `torch` is False and torch is not imported
    yet, torch. Each evaluation seeds its own training from evo.genome.eval_seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if torch or "torch" in sys.modules:
        import torch as _torch

        _torch.manual_seed(seed)
