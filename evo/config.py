"""The run configuration: one frozen dataclass, parsed once from the command line."""
from __future__ import annotations

import argparse
import functools
import hashlib
import os
from dataclasses import dataclass, fields
from pathlib import Path

MODES = ("baseline", "male", "female", "combined")
PAIRINGS = ("choice", "ranked", "random")
STARTS = ("full", "bracket")
CHAMPIONS = ("reference", "fit", "holdout", "blend", "linear")
FEMALE_FITNESSES = ("tau", "top")


@dataclass(frozen=True)
class Config:
    gens: int = 20
    """co-evolution generations (after the bootstrap generation 0)"""
    mode: str = "combined"
    """baseline | male | female | combined"""
    preset: str = "tiny"
    """model-size and budget preset (tiny: CPU default; paper: nanoGPT's shakespeare_char on a GPU)"""
    seed: int = 0
    """run seed: reaches random, numpy, torch and DEAP; each evaluation derives its own from it"""
    males: int = 8
    """male (architecture) population size mu"""
    females: int = 48
    """female (predictor) population size"""
    offspring: int = 12
    """mating pairs per generation: each yields one architecture child and one predictor child"""
    pairing: str = "ranked"
    """how pairs mate: ranked (the i-th male with a random top-half father, the i-th female in mating
    order), choice (the female picks the father among --choice-sample top-half males: the truth where
    known, else her own prediction), random (random males and females: the ablation)"""
    choice_sample: int = 4
    """top-half males a female judges when she chooses the father (pairing choice)"""
    credit: float = 0.0
    """weight of a female's record (how her fully trained architecture children did) in the mating
    order, in Kendall-tau units (0: fit tau alone)"""
    promote: int = 1
    """children promoted to the full budget per generation by the females' ranking"""
    promote_random: int = 1
    """extra children promoted at random (keeps the archive unbiased by the females' own picks)"""
    rungs: int = 0
    """successive-halving rungs between the early and the full budget: rung k trains the best
    1/eta of the rung before to eta^k times the early budget, each ranked by the champion female"""
    eta: int = 3
    """rungs' reduction factor: each rung keeps 1/eta of its candidates and trains them eta x longer"""
    steady: int = 0
    """steady-state scheduling: keep this many evaluations in flight, breeding a child whenever one
    ends, with no generation barrier (0: generational). Results depend on it, never on the workers"""
    bootstrap: int = 8
    """random architectures fully trained in generation 0 (the archive's seed)"""
    start: str = "bracket"
    """generation 0: bracket (bootstrap x eta architectures early-trained; the best bootstrap / eta of
    them by early loss, the baseline and promote_random drawn from the rest fully trained: a
    Hyperband-like first bracket, so a good architecture is fully trained after a fraction of the
    full start's cost) or full (the baseline and bootstrap - 1 random architectures, all fully
    trained: the default before v3, as good at 20+ full trainings, worse at 5-10 on both tables)"""
    champion: str = "reference"
    """which female judges: reference (v_last unless a top female beats it on both the fit and the
    held-out parts of the archive), fit (the best by fit tau, no reference to beat) or holdout (the
    best by held-out tau of the top five by fit tau, no reference to beat) or blend (the reference
    rule's champion, or a non-negative blend of the top five formulas where it beats her on both parts)
    or linear (the same with her output plus a least-squares weight per architecture feature; needs
    --arch-features)"""
    female_fitness: str = "tau"
    """what a female is judged by, on the fit and on the held-out part of the archive alike (so the
    champion rule too): tau (Kendall tau of her predictions with the final losses) or top (how good
    her picks are: over fixed random subsets of --offspring architectures, the true rank of the
    --promote she ranks best, 1 for the true best, -1 for the worst, 0 for a random pick)"""
    pred_steps: int = 5
    """GP generations the females run on the archive each generation (scoring is cheap)"""
    budget_flops: float | None = None
    """stop starting new generations once this many training FLOPs are spent (equal-compute comparisons)"""
    early_frac: float | None = None
    """early budget as a fraction of the full budget (None: the preset's)"""
    full_steps: int | None = None
    """full training budget in steps (None: the preset's)"""
    table: str | None = None
    """search a tabular benchmark by lookup instead of training (a table directory, docs/TABLES.md);
    --budget-flops is then in the table's cost unit"""
    objective: str | None = None
    """search your own model: package.module:name of an evo.objective.Objective (its space, its
    training loop; --budget-flops is then in training steps; README "Search your own model")"""
    warm_start: str | None = None
    """extra curves for the females' archive: a table directory with the same budgets (docs/TABLES.md),
    or 'mlflow' for the fully trained evaluations of earlier searches in --experiment (evo/warmstart.py)"""
    arch_features: bool = False
    """let females use architecture features (log params, log lr) besides curve features"""
    experiment: str = "dimorph"
    """MLflow experiment name"""
    tracking_uri: str | None = None
    """MLflow tracking URI (None: on --resume the one the search was started with, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory)"""
    out: str | None = None
    """output folder for the checkpoint, states and artifacts (None: outputs/<mode>-<preset>-seed<seed>)"""
    resume: bool = False
    """continue the search from the checkpoint in --out (a larger --gens extends a finished one)"""
    device: str = "cpu"
    """torch device for training: cpu, cuda, cuda:1, ..."""
    data: str | None = None
    """path to a UTF-8 text dataset (None: $DIMORPH_DATA, the user cache, or a one-time download)"""
    threads: int = 1
    """CPU threads per evaluation (fixed so that results do not depend on parallelism)"""
    workers: int = -1
    """local worker processes (0: evaluate in this process; -1: on CPU one per core, at most --offspring)"""
    workers_per_gpu: int = 1
    """worker processes placed on each visible GPU when --device cuda and --workers > 0"""
    dask_scheduler: str | None = None
    """address of a running Dask scheduler to evaluate on (e.g. tcp://10.0.0.5:8786)"""
    dask_local: int = 0
    """start a local Dask cluster with this many workers"""
    retries: int = 2
    """times a crashed evaluation is retried before it is recorded as failed"""
    inference_samples: int = 10
    """samples in the final inference-speed measurement (paper protocol: 10)"""
    inference_tokens: int = 500
    """new tokens per sample in that measurement (paper protocol: 500)"""
    progress: bool = True
    """show progress bars"""

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ValueError(msg)

        need(self.gens >= 0, f"gens must be >= 0, got {self.gens}")
        from models.presets import PRESETS  # evo is the one place that knows models/

        need(self.preset in PRESETS, f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        need(self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        need(self.males >= 2, f"males must be >= 2, got {self.males}")
        need(self.females >= 2, f"females must be >= 2, got {self.females}")
        need(self.offspring >= 1, f"offspring must be >= 1, got {self.offspring}")
        need(self.pairing in PAIRINGS, f"pairing must be one of {', '.join(PAIRINGS)}, got {self.pairing!r}")
        need(0.0 <= self.credit <= 1.0, f"credit must be in [0, 1], got {self.credit}")
        need(self.choice_sample >= 2, f"choice_sample must be >= 2, got {self.choice_sample}")
        need(self.promote >= 0, f"promote must be >= 0, got {self.promote}")
        need(self.promote_random >= 0, f"promote_random must be >= 0, got {self.promote_random}")
        need(self.promote + self.promote_random <= self.offspring,
             f"promote + promote_random ({self.promote} + {self.promote_random}) must not exceed "
             f"offspring ({self.offspring})")
        need(self.rungs >= 0, f"rungs must be >= 0, got {self.rungs}")
        need(self.eta >= 2, f"eta must be >= 2, got {self.eta}")
        need(self.steady >= 0, f"steady must be >= 0 (0: generational), got {self.steady}")
        need(not (self.steady and self.rungs), f"--steady {self.steady} promotes asynchronously, one child "
             f"at a time; it does not take --rungs (got --rungs {self.rungs})")
        need(self.start in STARTS, f"start must be one of {', '.join(STARTS)}, got {self.start!r}")
        need(self.champion in CHAMPIONS, f"champion must be one of {', '.join(CHAMPIONS)}, got {self.champion!r}")
        need(self.female_fitness in FEMALE_FITNESSES, f"female_fitness must be one of "
             f"{', '.join(FEMALE_FITNESSES)}, got {self.female_fitness!r}")
        need(self.bootstrap >= 3, f"bootstrap must be >= 3 (females need an archive to rank), got {self.bootstrap}")
        need(self.budget_flops is None or self.budget_flops > 0,
             f"budget_flops must be > 0, got {self.budget_flops}")
        need(self.pred_steps >= 0, f"pred_steps must be >= 0, got {self.pred_steps}")
        need(self.early_frac is None or 0.0 < self.early_frac < 1.0,
             f"early_frac must be in (0, 1), got {self.early_frac}")
        need(self.full_steps is None or self.full_steps >= 2, f"full_steps must be >= 2, got {self.full_steps}")
        need(self.threads >= 1, f"threads must be >= 1, got {self.threads}")
        need(self.workers >= -1, f"workers must be >= 0 (or -1 for one per core), got {self.workers}")
        need(self.workers_per_gpu >= 1, f"workers_per_gpu must be >= 1, got {self.workers_per_gpu}")
        need(self.dask_local >= 0, f"dask_local must be >= 0, got {self.dask_local}")
        need(self.inference_samples >= 1, f"inference_samples must be >= 1, got {self.inference_samples}")
        need(self.inference_tokens >= 1, f"inference_tokens must be >= 1, got {self.inference_tokens}")
        need(self.retries >= 0, f"retries must be >= 0, got {self.retries}")
        need(not (self.dask_scheduler and self.dask_local),
             "give either --dask-scheduler or --dask-local, not both")
        need(self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")
             or self.device == "mps", f"device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.table is not None:
            need(Path(self.table, "table.json").is_file(),
                 f"table must be a directory holding table.json (docs/TABLES.md), got {self.table!r}")
            need(self.full_steps is None and self.early_frac is None,
                 "--full-steps and --early-frac come from the table's table.json; do not give them with --table")
        if self.objective is not None:
            need(self.table is None, "give either --objective or --table, not both")
            need(not self.arch_features, "--arch-features reads parameter counts, which a user "
                 "objective does not report; leave it out with --objective")
            from evo.objective import load_objective
            load_objective(self.objective)  # a bad name is refused here, naming it
        if self.warm_start is not None and self.warm_start != "mlflow":
            need(Path(self.warm_start, "table.json").is_file(),
                 f"warm_start must be 'mlflow' or a table directory holding table.json, got {self.warm_start!r}")
        if self.data is not None:
            need(Path(self.data).is_file(), f"data file not found: {self.data!r}")

    @property
    def out_dir(self) -> Path:
        """Where the checkpoint, training states and artifacts go."""
        return Path(self.out or f"outputs/{self.mode}-{self.preset}-seed{self.seed}")

    @property
    def n_workers(self) -> int:
        """Worker processes to start (0: serial). Auto (-1) uses the CPU cores on CPU, serial on GPU."""
        if self.table and self.workers < 0:
            return 0  # a lookup costs microseconds: workers would only add overhead
        if self.workers >= 0:
            return self.workers
        if self.device != "cpu" or self.dask_scheduler or self.dask_local:
            return 0
        n = min((os.cpu_count() or 1) // self.threads, self.offspring)
        return n if n > 1 else 0

    def search_fields(self) -> dict:
        """The fields that define the search's results: a resumed run must match them, except `gens`,
        which may grow (a finished search can be extended). `data` is the sha256 of the dataset text
        (wherever it lies), so one search never mixes datasets."""
        skip = {"resume", "progress", "workers", "workers_per_gpu", "dask_scheduler", "dask_local",
                "tracking_uri", "out", "retries", "experiment", "data", "device", "inference_samples",
                "inference_tokens"}
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip
               and not (f.name == "objective" and self.objective is None)}  # older checkpoints have none
        if self.steady:  # the drain at the end differs from an extended schedule: it cannot grow
            out["steady_gens"] = self.gens
        if getattr(self, "table", None) is None and getattr(self, "objective", None) is None:  # no dataset read
            out["data"] = dataset_id(self.data)
        return out


def dataset_id(data: str | None) -> str:
    """'sha256:<hex>' of the dataset text that `data` resolves to (see models.data.resolve_text)."""
    from models.data import resolve_text

    path = resolve_text(data)
    st = path.stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


def _field_help(cls) -> dict[str, str]:
    """Field docstrings (the string literal under each field) become --help text."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    out = {}
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            out[a.target.id] = str(b.value.value)
    return out


def add_config_args(parser: argparse.ArgumentParser, cls=Config) -> None:
    """Add one --flag per dataclass field; help text from the field docstrings."""
    helps = _field_help(cls)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=helps.get(f.name, ""))
            continue
        kind = {"int": int, "float": float, "str": str}
        base = str(f.type).split("|")[0].strip()
        parser.add_argument(flag, type=kind.get(base, str), default=default, metavar=base.upper(),
                            help=f"{helps.get(f.name, '')} (default: {default})")


def parse_config(argv=None, cls=Config, prog: str | None = None):
    """Parse argv into a frozen config; a bad value exits with a message naming it."""
    parser = argparse.ArgumentParser(prog=prog, description=cls.__doc__ and cls.__doc__.split("\n")[0])
    add_config_args(parser, cls)
    ns = parser.parse_args(argv)
    try:
        return cls(**vars(ns))
    except ValueError as e:
        parser.error(str(e))
