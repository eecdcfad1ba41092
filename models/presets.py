"""Presets: a search space of genes, budgets and a baseline architecture per hardware scale.

A genome is a vector of unit floats u in [0, 1], one per gene; each Param maps u to a value by a
pure function. Genes: n_layer, n_head, head_size (n_embd = n_head * head_size, always valid),
mlp_ratio, dropout, lr (log scale), batch_size, weight_decay, warmup (a fraction of the full budget, so a
shorter --full-steps keeps every genome valid).
"""
import math
import random
from dataclasses import dataclass, replace
from typing import Sequence

from models.gpt import GPTConfig
from models.train import TrainConfig


def _clip(u: float) -> float:
    if math.isnan(u):
        raise ValueError(f"gene value must be a number in [0, 1], got {u}")
    return min(1.0, max(0.0, float(u)))  # mutation may step outside: clip, never reject


@dataclass(frozen=True)
class ChoiceParam:
    """One of a tuple of values; u in [0, 1] is split into equal bins."""

    name: str
    choices: tuple

    def decode(self, u: float):
        """Unit float -> the choice whose bin holds u (out-of-range u is clipped)."""
        n = len(self.choices)
        return self.choices[min(int(_clip(u) * n), n - 1)]

    def encode(self, value) -> float:
        """Choice -> the centre of its bin."""
        if value not in self.choices:
            raise ValueError(f"{self.name}={value!r} is not one of {self.choices}")
        return (self.choices.index(value) + 0.5) / len(self.choices)


@dataclass(frozen=True)
class IntParam:
    """An int in [low, high]; u in [0, 1] is split into high - low + 1 equal bins."""

    name: str
    low: int
    high: int

    def decode(self, u: float) -> int:
        """Unit float -> the int whose bin holds u (out-of-range u is clipped)."""
        n = self.high - self.low + 1
        return self.low + min(int(_clip(u) * n), n - 1)

    def encode(self, value: int) -> float:
        """Int -> the centre of its bin."""
        if value != int(value) or not self.low <= value <= self.high:
            raise ValueError(f"{self.name}={value!r} is not an int in [{self.low}, {self.high}]")
        return (int(value) - self.low + 0.5) / (self.high - self.low + 1)


@dataclass(frozen=True)
class FloatParam:
    """A float in [low, high], linear or log scale, rounded to 6 significant digits."""

    name: str
    low: float
    high: float
    log: bool = False

    def decode(self, u: float) -> float:
        """Unit float -> value (out-of-range u is clipped)."""
        u = _clip(u)
        if self.log:
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        return float(f"{x:.6g}")  # so that decode(encode(v)) == v for short values like 1e-3

    def encode(self, value: float) -> float:
        """Value -> unit float."""
        if not self.low <= value <= self.high:
            raise ValueError(f"{self.name}={value!r} is not in [{self.low}, {self.high}]")
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)


Param = ChoiceParam | IntParam | FloatParam
GENES = ("n_layer", "n_head", "head_size", "mlp_ratio", "dropout", "lr", "batch_size",
         "weight_decay", "warmup")


class GeneSpace:
    """Genes on the unit cube, as a Preset, a table's space (evo.table) and a user objective's
    (evo.objective_space) share them: each has `space` (a tuple of params) and its own `decode`."""

    @property
    def gene_names(self) -> tuple[str, ...]:
        """Gene names in genome order."""
        return tuple(p.name for p in self.space)

    def encode(self, genes: dict) -> list[float]:
        """Genes dict -> unit vector (bin centres for discrete genes)."""
        missing = set(self.gene_names) - set(genes)
        if missing:
            raise ValueError(f"genes {sorted(missing)} are missing")
        return [float(p.encode(genes[p.name])) for p in self.space]

    def sample(self, rng: random.Random) -> dict:
        """A uniformly random genome decoded to genes, drawn from rng only."""
        return self.decode([rng.random() for _ in self.space])


@dataclass(frozen=True)
class Preset(GeneSpace):
    """Budgets, data sizes, fixed training settings, a baseline genome and the search space."""

    name: str
    block_size: int
    batch_size: int  # used when a genome has no batch_size gene
    full_steps: int  # F, the full budget and the cosine horizon
    early_frac: float
    train_tokens: int | None  # the first train_tokens training tokens; None = all
    n_val_windows: int
    n_train_eval_windows: int
    eval_interval: int
    early_evals: int  # validation points inside the early budget (evenly spaced; 0: eval_interval only)
    warmup_steps: int  # used when a genome has no warmup gene
    min_lr_ratio: float
    betas: tuple[float, float]
    grad_clip: float
    dtype: str
    compile: bool
    baseline: dict
    space: tuple

    def __post_init__(self):
        names = self.gene_names
        if set(names) - set(GENES) or len(set(names)) != len(names):
            raise ValueError(f"space genes {names} must be distinct names from {GENES}")
        if set(self.baseline) != set(names):
            raise ValueError(f"baseline genes {sorted(self.baseline)} differ from the space {names}")
        if not 0 < self.early_frac < 1:
            raise ValueError(f"early_frac must be in (0, 1), got {self.early_frac}")
        if self.early_evals < 0:
            raise ValueError(f"early_evals must be >= 0, got {self.early_evals}")

    @property
    def early_steps(self) -> int:
        """Early budget in steps: round(full_steps * early_frac)."""
        return max(1, round(self.full_steps * self.early_frac))

    @property
    def dense_eval_interval(self) -> int:
        """Steps between validation points inside the early budget (the early budget's last step included)."""
        return max(1, self.early_steps // self.early_evals) if self.early_evals else self.eval_interval

    def decode(self, u: Sequence[float]) -> dict:
        """Unit vector -> genes dict (pure)."""
        if len(u) != len(self.space):
            raise ValueError(f"genome has {len(u)} values, preset {self.name!r} needs {len(self.space)}")
        return {p.name: p.decode(x) for p, x in zip(self.space, u)}

    def configs(self, genes: dict, vocab_size: int, device: str = "cpu") -> tuple[GPTConfig, TrainConfig]:
        """Genes (missing ones from the baseline) -> (GPTConfig, TrainConfig); pure."""
        unknown = set(genes) - set(GENES)
        if unknown:
            raise ValueError(f"unknown genes {sorted(unknown)}; known: {GENES}")
        g = {**self.baseline, **genes}
        gpt = GPTConfig(block_size=self.block_size, vocab_size=vocab_size, n_layer=int(g["n_layer"]),
                        n_head=int(g["n_head"]), n_embd=int(g["n_head"]) * int(g["head_size"]),
                        dropout=float(g.get("dropout", 0.0)), bias=False,
                        mlp_ratio=float(g.get("mlp_ratio", 4.0)))
        lr = float(g["lr"])
        tc = TrainConfig(lr=lr, min_lr=lr * self.min_lr_ratio,
                         batch_size=int(g.get("batch_size", self.batch_size)),
                         weight_decay=float(g.get("weight_decay", 0.1)),
                         warmup_steps=(round(float(g["warmup"]) * self.full_steps) if "warmup" in g
                                       else self.warmup_steps),
                         max_steps=self.full_steps, beta1=self.betas[0], beta2=self.betas[1],
                         grad_clip=self.grad_clip, eval_interval=self.eval_interval,
                         dense_eval_until=self.early_steps if self.early_evals else 0,
                         dense_eval_interval=self.dense_eval_interval, device=device,
                         dtype=self.dtype, compile=self.compile, threads=1)
        return gpt, tc


TINY = Preset(
    name="tiny", block_size=32, batch_size=16, full_steps=600, early_frac=0.1, train_tokens=10_000,
    n_val_windows=256, n_train_eval_windows=64, eval_interval=30, early_evals=6, warmup_steps=0, min_lr_ratio=0.1,
    betas=(0.9, 0.99), grad_clip=1.0, dtype="float32", compile=False,
    baseline=dict(n_layer=2, n_head=2, head_size=16, mlp_ratio=4, dropout=0.1, lr=1e-3,
                  batch_size=16, weight_decay=0.1, warmup=0.0),
    space=(IntParam("n_layer", 1, 3), IntParam("n_head", 1, 4), ChoiceParam("head_size", (8, 12, 16)),
           ChoiceParam("mlp_ratio", (2, 3, 4)), FloatParam("dropout", 0.0, 0.3),
           FloatParam("lr", 2e-4, 2e-2, log=True), ChoiceParam("batch_size", (8, 12, 16)),
           FloatParam("weight_decay", 0.0, 0.3), ChoiceParam("warmup", (0.0, 0.025, 0.05, 0.1))),
)

# nanoGPT's config/train_shakespeare_char.py as the baseline: 6x6 heads of 64 (384 wide), block
# 256, batch 64, dropout 0.2, lr 1e-3 -> 1e-4 over 5000 steps, warmup 100; eval every 250 steps
# over 200 batches of 64 windows (fixed windows here).
PAPER = Preset(
    name="paper", block_size=256, batch_size=64, full_steps=5000, early_frac=0.1, train_tokens=None,
    n_val_windows=200 * 64, n_train_eval_windows=200 * 64, eval_interval=250, early_evals=0, warmup_steps=100,
    min_lr_ratio=0.1, betas=(0.9, 0.99), grad_clip=1.0, dtype="bfloat16", compile=True,
    baseline=dict(n_layer=6, n_head=6, head_size=64, mlp_ratio=4, dropout=0.2, lr=1e-3,
                  batch_size=64, weight_decay=0.1, warmup=0.02),
    space=(IntParam("n_layer", 2, 8), IntParam("n_head", 2, 8), ChoiceParam("head_size", (32, 48, 64, 96)),
           ChoiceParam("mlp_ratio", (2, 3, 4, 6)), FloatParam("dropout", 0.0, 0.4),
           FloatParam("lr", 2e-4, 5e-3, log=True), ChoiceParam("batch_size", (32, 64, 128)),
           FloatParam("weight_decay", 0.0, 0.3), ChoiceParam("warmup", (0.0, 0.01, 0.02, 0.05, 0.1))),
)

PRESETS = {p.name: p for p in (TINY, PAPER)}


def with_budgets(preset: Preset, full_steps: int | None = None, early_frac: float | None = None) -> Preset:
    """The preset with a run's budget overrides (None keeps the preset's own)."""
    changes = {k: v for k, v in (("full_steps", full_steps), ("early_frac", early_frac)) if v is not None}
    return replace(preset, **changes) if changes else preset


def get_preset(name: str) -> Preset:
    """Look a preset up by name."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]
