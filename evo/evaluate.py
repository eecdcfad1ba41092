"""One evaluation as a pure task: (genes, budget, seed, data location) -> JSON-able result.

Runs in the driver or in any worker (process pool, Dask). It never talks to MLflow; the driver does.
A training that fails (diverges, runs out of memory, raises inside a step) is a result with `error`
set; an unusable environment or configuration (data, device, an unknown gene, a state file that
cannot be read or written) raises SetupError, which every executor hands to the driver unchanged so
that the search stops at once with its message.
"""
from __future__ import annotations

import functools
import os
import time
import traceback
from dataclasses import dataclass, field

from models.data import SetupError, check_device
from models.presets import GENES, Preset

__all__ = ["EvalTask", "PHASES", "SetupError", "check_task", "evaluate", "failed", "final_phase", "token_data"]


@dataclass(frozen=True)
class EvalTask:
    key: str
    """unique id of this evaluation within a search, e.g. 'g3-c2'"""
    genes: dict
    preset: Preset
    steps: int
    """train up to this step (the early budget, or the full budget for a continuation)"""
    seed: int
    data: str | None = None
    device: str = "cpu"
    threads: int = 1
    load_state: str | None = None
    """continue from this saved early state (promotion)"""
    save_state: str | None = None
    """save the state reached to this file"""
    phase: str = "early"
    """one of PHASES: early | rung | full (a continuation to the full budget) | straight (the full budget in one go)"""
    record: str = ""
    """the key of the search's record (architecture) this task trains; '' means `key`"""
    meta: dict = field(default_factory=dict)

    @property
    def record_key(self) -> str:
        """The architecture's record key (a continuation 'g3-c2/full' trains record 'g3-c2')."""
        return self.record or self.key


PHASES = ("early", "rung", "full", "straight")
"""a phase below the full budget (early: the first, rung: a later one) or one that reaches it"""


FINAL_PHASES = ("full", "straight")
"""the phases that train to the full budget: a continuation of an early phase, or one run straight to it"""


def final_phase(phase: str | None) -> bool:
    """Whether a phase trains to the full budget (its result is the architecture's final one)."""
    return phase in FINAL_PHASES


def token_data(data: str | None, preset: Preset):
    """The preset's token data (training subset, fixed windows), cached per process."""
    return _token_data(data, preset.block_size, preset.train_tokens, preset.n_val_windows,
                       preset.n_train_eval_windows)


@functools.lru_cache(maxsize=4)
def _token_data(data, block_size, train_tokens, n_val_windows, n_train_eval_windows):
    from models.data import load_dataset, make_token_data

    return make_token_data(load_dataset(data), block_size, train_tokens, n_val_windows, n_train_eval_windows)


def check_task(task: EvalTask) -> None:
    """SetupError for what no training of this task can get past: unknown genes, a bad device."""
    unknown = sorted(set(task.genes) - set(GENES))
    if unknown:
        raise SetupError(f"evaluation {task.key}: unknown gene(s) {unknown}; known: {list(GENES)}")
    check_device(task.device)


def evaluate(task: EvalTask) -> dict:
    """Train one candidate; failures inside training come back as a result with `error` set.

    SetupError (see the module docstring) propagates: it is not a failed training.
    """
    from models.train import load_state, save_state, train

    t0 = time.perf_counter()
    check_task(task)
    data = token_data(task.data, task.preset)
    try:
        gpt_cfg, train_cfg = task.preset.configs(task.genes, data.vocab_size, device=task.device)
        train_cfg = _with_threads(train_cfg, task.threads)
        state = None
        if task.load_state:
            try:
                state = load_state(task.load_state)
            except OSError as e:
                raise SetupError(f"evaluation {task.key}: cannot read the saved early state "
                                 f"{task.load_state} ({e.strerror or e}); workers on other machines "
                                 f"need a shared --out folder") from None
            except Exception as e:  # torch's reader: a truncated or foreign file
                raise SetupError(f"evaluation {task.key}: the saved early state {task.load_state} is "
                                 f"unreadable ({_reason(e)}); delete it and resume: the architecture is then "
                                 f"retrained from step 0") from None
        res = train(gpt_cfg, train_cfg, data, steps=task.steps, seed=task.seed, state=state)
        if task.save_state and res.state is not None:
            tmp = task.save_state + ".tmp"
            try:
                os.makedirs(os.path.dirname(task.save_state) or ".", exist_ok=True)
                save_state(res.state, tmp)
                os.replace(tmp, task.save_state)
            except Exception as e:  # a full disk, a read-only folder: torch's writer raises RuntimeError
                _discard(tmp)
                raise SetupError(f"evaluation {task.key}: cannot write the training state "
                                 f"{task.save_state} ({_reason(e)}); the training is not booked: fix the "
                                 f"disk and resume to train it again") from None
        out = res.to_dict()
        out["error"] = None
    except SetupError:
        raise
    except Exception as e:  # a crashed training is a result, never a crash of the search
        if "out of memory" not in str(e).lower() and not isinstance(e, (RuntimeError, ValueError)):
            raise
        out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=5),
               "diverged": False}
    out["key"] = task.key
    out["phase"] = task.phase
    out["eval_seconds"] = time.perf_counter() - t0
    return out


def _reason(e: BaseException) -> str:
    """An exception's own words on one line (an OSError's strerror, else its first line)."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def _discard(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _with_threads(train_cfg, threads: int):
    import dataclasses

    if train_cfg.device == "cpu" and getattr(train_cfg, "threads", None) != threads:
        return dataclasses.replace(train_cfg, threads=threads)
    return train_cfg


def failed(result: dict) -> bool:
    """A result that counts as worst fitness: crashed or diverged."""
    return bool(result.get("error")) or bool(result.get("diverged"))
