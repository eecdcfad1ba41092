"""The trainer: AdamW, warmup + cosine, fixed-window evals, resumable and bit-for-bit deterministic.

train(gpt_cfg, train_cfg, data, steps, seed, state=None) trains up to `steps` updates in total.
Step s (0-based) is the update made with lr_at(s); "after k steps" means after k updates.
Continuing from the state of a shorter call gives exactly the curves of one straight call: the
schedule's horizon is TrainConfig.max_steps, and the batch and dropout RNG states travel in the
TrainState.
"""
import copy
import ctypes
import math
import os
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields, replace

import torch

from models.data import TokenData
from models.gpt import GPT, GPTConfig
from models.inference import measure_inference  # noqa: F401  (part of this module's API)

EVAL_BATCH = 64  # windows per eval forward pass, the same for every candidate


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and runtime settings; max_steps is the cosine horizon (the full budget)."""

    lr: float = 1e-3
    min_lr: float | None = None  # None -> lr / 10
    batch_size: int = 16
    weight_decay: float = 0.1
    warmup_steps: int = 0
    max_steps: int = 600
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int = 60
    dense_eval_until: int = 0  # also evaluate every dense_eval_interval steps up to this step
    dense_eval_interval: int = 1
    device: str = "cpu"
    dtype: str = "float32"  # "bfloat16" autocasts on CUDA only
    compile: bool = False  # torch.compile on CUDA only
    threads: int | None = 1  # torch threads on CPU during the call; None leaves them alone
    diverge_loss: float | None = None  # None -> 2 ln(vocab) + 1

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.min_lr is not None and not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        for name in ("batch_size", "max_steps", "eval_interval", "dense_eval_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(f"warmup_steps must be in [0, max_steps={self.max_steps}], got {self.warmup_steps}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(f"weight_decay and grad_clip must be >= 0, got {self.weight_decay}, {self.grad_clip}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if torch.device(self.device).type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device must be cpu, cuda or mps, got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if self.dense_eval_until < 0:
            raise ValueError(f"dense_eval_until must be >= 0, got {self.dense_eval_until}")
        if self.diverge_loss is not None and not self.diverge_loss > 0:
            raise ValueError(f"diverge_loss must be > 0, got {self.diverge_loss}")

    def evaluates_at(self, step: int) -> bool:
        """True when validation runs after `step` updates (step 0 and a call's last step always do)."""
        return step % self.eval_interval == 0 or (
            step <= self.dense_eval_until and (step % self.dense_eval_interval == 0
                                               or step == self.dense_eval_until))

    def lr_at(self, step: int) -> float:
        """nanoGPT's get_lr: linear warmup, then cosine from lr to min_lr at max_steps."""
        min_lr = self.lr / 10 if self.min_lr is None else self.min_lr
        if step < self.warmup_steps:
            return self.lr * (step + 1) / (self.warmup_steps + 1)
        if step >= self.max_steps:
            return min_lr
        ratio = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (self.lr - min_lr)


@dataclass
class TrainState:
    """Everything needed to continue a run exactly; only tensors, dicts, lists, numbers, strings."""

    model: dict
    optimizer: dict
    step: int
    batch_rng: torch.Tensor  # the batch generator's state
    torch_rng: torch.Tensor  # the CPU RNG state (dropout on CPU)
    cuda_rng: torch.Tensor | None
    train_losses: list = field(default_factory=list)
    eval_steps: list = field(default_factory=list)
    val_losses: list = field(default_factory=list)
    train_eval_losses: list = field(default_factory=list)
    wall_time: float = 0.0  # seconds, evals included
    train_time: float = 0.0  # seconds in training steps only
    tokens: int = 0


def save_state(state: TrainState, path) -> None:
    """Write a TrainState with torch.save."""
    torch.save({f.name: getattr(state, f.name) for f in fields(TrainState)}, path)


def load_state(path) -> TrainState:
    """Read a TrainState written by save_state (weights_only=True: no pickled code)."""
    return TrainState(**torch.load(path, weights_only=True))


def model_from_state(gpt_cfg, state: TrainState | str | os.PathLike | None) -> GPT:
    """A GPT of `gpt_cfg` with the weights of a training state (a TrainState or the path of one);
    with None, its freshly initialised weights."""
    model = GPT(gpt_cfg)
    if state is not None:
        model.load_state_dict((state if isinstance(state, TrainState) else load_state(state)).model)
    return model


@dataclass
class TrainResult:
    """Curves and totals of a run; wall_time, flops and tokens include any earlier phase.

    train_losses[i] is the batch loss of step i (the update that makes i + 1 steps done).
    A diverged run stops early with final_val_loss = final_train_loss = inf.
    """

    steps: int
    train_losses: list[float]
    eval_steps: list[int]
    val_losses: list[float]
    train_eval_losses: list[float]
    best_val_loss: float
    best_val_step: int
    final_val_loss: float
    final_train_loss: float
    diverged: bool
    diverge_reason: str | None
    wall_time: float
    flops: float
    tokens: int
    n_params: int
    tokens_per_s: float
    state: TrainState | None = None

    def to_dict(self) -> dict:
        """JSON-able dict without the state; non-finite floats become None."""
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return [clean(x) for x in v] if isinstance(v, list) else v
        return {f.name: clean(getattr(self, f.name)) for f in fields(self) if f.name != "state"}


@torch.no_grad()
def _eval_loss(model, x, y, ctx) -> float:
    # mean token loss over fixed windows (n, block), in chunks of EVAL_BATCH
    total = 0.0
    for i in range(0, len(x), EVAL_BATCH):
        with ctx:
            _, loss = model(x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH])
        total += loss.item() * len(x[i:i + EVAL_BATCH])
    return total / len(x)


_HEAP_KEPT = None  # None: not tried yet; then whether glibc took the settings


def _keep_freed_memory() -> bool:
    """Once per process on Linux/glibc: keep freed memory (up to 64 MiB) instead of returning it to the OS.

    By default glibc serves an eval chunk's MiB-sized activations with mmap or trims the freed
    heap top, so every evaluation and many steps fault the same pages in again (~30-45k minor
    faults, ~10% of a tiny-preset early training on one CPU thread). Blocks under 32 MiB now
    come from the heap and up to 64 MiB of free heap top is kept. Process-wide; the values
    computed are unchanged.
    """
    global _HEAP_KEPT
    if _HEAP_KEPT is None:
        _HEAP_KEPT = False
        if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
            try:
                mallopt = ctypes.CDLL(None).mallopt
                M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
                _HEAP_KEPT = bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 64 << 20))
            except (OSError, AttributeError):
                pass
    return _HEAP_KEPT


def _optimizer(model, cfg: TrainConfig, device: torch.device):
    # weight decay on matrices and embeddings only, as nanoGPT's configure_optimizers
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             fused=device.type in ("cpu", "cuda"))


def train(gpt_cfg: GPTConfig, train_cfg: TrainConfig, data: TokenData, steps: int, seed: int,
          state: TrainState | None = None, progress: bool = False) -> TrainResult:
    """Train from scratch (or from state) up to `steps` total steps; never raises on divergence."""
    start = 0 if state is None else state.step
    if steps <= 0 or steps < start:
        raise ValueError(f"steps must be > 0 and >= the state's step {start}, got {steps}")
    if gpt_cfg.block_size != data.block_size or gpt_cfg.vocab_size != data.vocab_size:
        raise ValueError(f"model (block {gpt_cfg.block_size}, vocab {gpt_cfg.vocab_size}) does not "
                         f"match the data (block {data.block_size}, vocab {data.vocab_size})")
    device = torch.device(train_cfg.device)
    old_threads = torch.get_num_threads()
    if device.type == "cpu" and train_cfg.threads is not None:
        torch.set_num_threads(train_cfg.threads)
    if device.type == "cpu":
        _keep_freed_memory()
    try:
        # fork_rng: dropout seeds the global RNG here without leaking into the caller's
        cuda_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_ids):
            return _train(gpt_cfg, train_cfg, data, steps, seed, state, progress, device)
    finally:
        torch.set_num_threads(old_threads)


def _train(gpt_cfg, cfg, data, steps, seed, state, progress, device) -> TrainResult:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = GPT(gpt_cfg).to(device)
    opt = _optimizer(model, cfg, device)
    gen = torch.Generator().manual_seed(seed)
    if state is None:
        state = TrainState({}, {}, 0, gen.get_state(), torch.get_rng_state(), None)
    else:
        model.load_state_dict(state.model)
        opt.load_state_dict(copy.deepcopy(state.optimizer))  # the optimizer would alias its tensors
        gen.set_state(state.batch_rng)
        torch.set_rng_state(state.torch_rng)
        if device.type == "cuda" and state.cuda_rng is not None:
            torch.cuda.set_rng_state(state.cuda_rng, device)
    cuda = device.type == "cuda"
    ctx = torch.autocast("cuda", torch.bfloat16) if cuda and cfg.dtype == "bfloat16" else nullcontext()
    fwd = torch.compile(model) if cuda and cfg.compile else model
    threshold = cfg.diverge_loss or 2 * math.log(gpt_cfg.vocab_size) + 1
    train_losses, eval_steps = list(state.train_losses), list(state.eval_steps)
    val_losses, train_eval_losses = list(state.val_losses), list(state.train_eval_losses)
    tokens, train_time = state.tokens, state.train_time
    # a batch is one gather of B windows of block + 1 tokens (x = [:, :-1], y = [:, 1:])
    tokens_all = data.train.to(device)
    offsets = torch.arange(data.block_size + 1, device=device)
    n_starts = len(tokens_all) - data.block_size
    val = [t.to(device) for t in (data.val_x, data.val_y, data.train_eval_x, data.train_eval_y)]
    params = list(model.parameters())
    B, tokens_per_step = cfg.batch_size, cfg.batch_size * data.block_size

    def evaluate(step):
        model.eval()
        val_losses.append(_eval_loss(fwd, val[0], val[1], ctx))
        train_eval_losses.append(_eval_loss(fwd, val[2], val[3], ctx))
        eval_steps.append(step)
        model.train()

    if not eval_steps:
        evaluate(0)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, initial=state.step, desc="train", unit="step")
    diverge_reason = None
    model.train()
    step = state.step
    while step < steps:
        ts = time.perf_counter()
        lr = cfg.lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = tokens_all[torch.randint(n_starts, (B, 1), generator=gen).to(device) + offsets]
        with ctx:
            _, loss = fwd(batch[:, :-1], batch[:, 1:])
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_v = loss.item()
        step += 1
        tokens += tokens_per_step
        train_time += time.perf_counter() - ts
        train_losses.append(loss_v)
        if bar is not None:
            bar.update(1)
        if not loss_v <= threshold:  # NaN compares False
            diverge_reason = f"train loss {loss_v} at step {step} (threshold {threshold:.3g})"
            break
        if cfg.evaluates_at(step) or step == steps:
            evaluate(step)
            if bar is not None:
                bar.set_postfix(val=f"{val_losses[-1]:.4f}")
    if bar is not None:
        bar.close()

    diverged = diverge_reason is not None
    best_i = min(range(len(val_losses)), key=lambda i: math.inf if math.isnan(val_losses[i]) else val_losses[i])
    wall_time = state.wall_time + time.perf_counter() - t0
    new_state = None
    if not diverged:
        new_state = TrainState(
            model.state_dict(), opt.state_dict(), step, gen.get_state(), torch.get_rng_state(),
            torch.cuda.get_rng_state(device) if cuda else None,
            train_losses, eval_steps, val_losses, train_eval_losses, wall_time, train_time, tokens)
    return TrainResult(
        steps=step, train_losses=train_losses, eval_steps=eval_steps, val_losses=val_losses,
        train_eval_losses=train_eval_losses, best_val_loss=val_losses[best_i],
        best_val_step=eval_steps[best_i],
        final_val_loss=math.inf if diverged else val_losses[-1],
        final_train_loss=math.inf if diverged else train_eval_losses[-1],
        diverged=diverged, diverge_reason=diverge_reason, wall_time=wall_time,
        flops=model.flops_per_token() * tokens, tokens=tokens, n_params=model.num_params(),
        tokens_per_s=tokens / train_time if train_time > 0 else 0.0, state=new_state)


def main(argv=None) -> dict:
    """CLI: train a preset's baseline for the full budget and print the paper's four numbers."""
    import argparse
    import json

    from models.data import check_device, load_dataset, make_token_data
    from models.presets import PRESETS, get_preset

    ap = argparse.ArgumentParser(prog="python -m models.train", description=main.__doc__)
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--steps", type=int, default=None, help="budget (and cosine horizon); default the preset's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data", default=None, help="a UTF-8 text file (default: Tiny Shakespeare)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--no-inference", action="store_true", help="skip the inference-speed samples")
    a = ap.parse_args(argv)
    if a.threads is not None:
        torch.set_num_threads(a.threads)  # for the inference samples; train() sets its own
    preset = get_preset(a.preset)
    if a.steps is not None and a.steps < 1:
        ap.exit(2, f"{ap.prog}: error: --steps must be >= 1, got {a.steps}\n")
    steps = preset.full_steps if a.steps is None else a.steps
    try:  # no data, a bad device or a bad budget: one paragraph and exit code 2, no traceback
        check_device(a.device)
        ds = load_dataset(a.data)
        data = make_token_data(ds, preset.block_size, preset.train_tokens, preset.n_val_windows,
                               preset.n_train_eval_windows)
        gpt_cfg, train_cfg = preset.configs(preset.baseline, ds.vocab_size, device=a.device)
        train_cfg = replace(train_cfg, max_steps=steps, threads=a.threads,
                                        warmup_steps=min(train_cfg.warmup_steps, steps))
    except ValueError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    r = train(gpt_cfg, train_cfg, data, steps, a.seed, progress=not a.json and steps >= 200)
    out = {"preset": preset.name, "steps": r.steps, "final_train_loss": r.final_train_loss,
           "best_val_loss": r.best_val_loss, "best_val_step": r.best_val_step,
           "final_val_loss": r.final_val_loss, "train_time_s": r.wall_time, "n_params": r.n_params,
           "train_tokens_per_s": r.tokens_per_s, "diverged": r.diverged}
    if not a.no_inference and r.state is not None:
        model = model_from_state(gpt_cfg, r.state)
        for key, cache in (("inference_tokens_per_s", True), ("inference_tokens_per_s_no_cache", False)):
            out[key] = measure_inference(model, use_cache=cache, device=a.device, seed=a.seed)
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:32s} {v:.4f}" if isinstance(v, float) else f"{k:32s} {v}")
    return out


if __name__ == "__main__":
    main()
