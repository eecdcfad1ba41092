import json
import math

import pytest
import torch

from models.gpt import GPT, GPTConfig
from models.train import TrainConfig, load_state, measure_inference, save_state, train


def _cfgs(tiny_data, **kw):
    gpt = GPTConfig(block_size=16, vocab_size=tiny_data.vocab_size, n_layer=1, n_head=2, n_embd=32,
                    dropout=kw.pop("dropout", 0.1))
    return gpt, TrainConfig(**{"batch_size": 8, "max_steps": 40, "eval_interval": 10, "warmup_steps": 4, **kw})


def test_loss_falls_and_result_fields(tiny_data):
    gpt, tc = _cfgs(tiny_data, lr=3e-3)
    threads = torch.get_num_threads()
    r = train(gpt, tc, tiny_data, 40, seed=0)
    assert torch.get_num_threads() == threads  # threads=1 only for the call
    assert r.steps == 40 and len(r.train_losses) == 40 and not r.diverged
    assert r.eval_steps == [0, 10, 20, 30, 40]
    assert abs(r.val_losses[0] - math.log(tiny_data.vocab_size)) < 0.1
    assert r.val_losses[-1] < r.val_losses[0] - 0.8
    assert r.best_val_loss == min(r.val_losses) and r.final_val_loss == r.val_losses[-1]
    assert r.final_train_loss == r.train_eval_losses[-1]
    assert r.tokens == 40 * 8 * 16 and r.n_params == GPT(gpt).num_params()
    assert r.flops == GPT(gpt).flops_per_token() * r.tokens
    d = json.loads(json.dumps(r.to_dict()))
    assert "state" not in d and d["train_losses"] == r.train_losses


def test_seeds_and_global_rng(tiny_data):
    gpt, tc = _cfgs(tiny_data)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = train(gpt, tc, tiny_data, 12, seed=0)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is untouched
    b = train(gpt, tc, tiny_data, 12, seed=0)
    c = train(gpt, tc, tiny_data, 12, seed=1)
    assert a.train_losses == b.train_losses and a.val_losses == b.val_losses
    assert a.train_losses != c.train_losses


def test_early_then_continue_equals_straight(tiny_data, tmp_path):
    gpt, tc = _cfgs(tiny_data)
    straight = train(gpt, tc, tiny_data, 40, seed=7)
    early = train(gpt, tc, tiny_data, 15, seed=7)
    assert early.eval_steps == [0, 10, 15]
    cont = train(gpt, tc, tiny_data, 40, seed=7, state=early.state)
    assert cont.train_losses == straight.train_losses
    assert cont.eval_steps == [0, 10, 15, 20, 30, 40]
    s_val = dict(zip(straight.eval_steps, straight.val_losses))
    assert all(s_val[s] == v for s, v in zip(cont.eval_steps, cont.val_losses) if s in s_val)
    assert cont.best_val_loss == straight.best_val_loss and cont.tokens == straight.tokens
    # the same through a file, and the early state is not consumed by the first continuation
    save_state(early.state, tmp_path / "early.pt")
    again = train(gpt, tc, tiny_data, 40, seed=7, state=load_state(tmp_path / "early.pt"))
    assert again.train_losses == straight.train_losses and again.val_losses == cont.val_losses
    twice = train(gpt, tc, tiny_data, 40, seed=7, state=early.state)
    assert twice.train_losses == straight.train_losses


def test_divergence_is_a_result(tiny_data):
    gpt, tc = _cfgs(tiny_data, dropout=0.0, lr=50.0, grad_clip=0.0, warmup_steps=0)
    r = train(gpt, tc, tiny_data, 40, seed=0)
    assert r.diverged and r.steps < 40 and "train loss" in r.diverge_reason
    assert r.final_val_loss == math.inf and r.state is None
    assert json.dumps(r.to_dict(), allow_nan=False)


def test_bad_inputs(tiny_data):
    gpt, tc = _cfgs(tiny_data)
    with pytest.raises(ValueError, match="got 0"):
        train(gpt, tc, tiny_data, 0, seed=0)
    early = train(gpt, tc, tiny_data, 10, seed=0)
    with pytest.raises(ValueError, match="got 5"):
        train(gpt, tc, tiny_data, 5, seed=0, state=early.state)
    with pytest.raises(ValueError, match="lr must be > 0, got -1"):
        TrainConfig(lr=-1)
    with pytest.raises(ValueError, match="float16"):
        TrainConfig(dtype="float16")


def test_lr_schedule():
    tc = TrainConfig(lr=1e-3, warmup_steps=9, max_steps=109)
    assert tc.lr_at(0) == pytest.approx(1e-4)
    assert tc.lr_at(9) == pytest.approx(1e-3)
    assert tc.lr_at(59) == pytest.approx(5.5e-4)
    assert tc.lr_at(109) == pytest.approx(1e-4) and tc.lr_at(500) == pytest.approx(1e-4)


def test_measure_inference_runs(monkeypatch, one_thread):
    torch.manual_seed(0)
    model = GPT(GPTConfig(16, 65, 1, 2, 16)).train()
    calls = []
    real = GPT.generate
    monkeypatch.setattr(GPT, "generate", lambda self, idx, n, **kw: calls.append((idx.tolist(), n, kw))
                        or real(self, idx, n, **kw))
    import models.inference
    ticks = iter([0.0, 0.5, 1.0, 1.25, 2.0, 2.4])  # a clock: each generation takes 0.5 s, 0.25 s, 0.4 s
    monkeypatch.setattr(models.inference.time, "perf_counter", lambda: next(ticks))
    assert measure_inference(model, n_samples=2, new_tokens=20) == pytest.approx((20 / 0.5 + 20 / 0.25) / 2)
    assert measure_inference(model, n_samples=1, new_tokens=20, use_cache=False) == pytest.approx(20 / 0.4)
    assert [c[0] for c in calls] == [[[0]]] * 3 and {c[1] for c in calls} == {20}
    assert [c[2]["use_cache"] for c in calls] == [True, True, False]
    assert calls[0][2]["temperature"] == 0.8 and calls[0][2]["top_k"] == 200
    assert model.training  # the mode is restored


def test_dense_early_evaluations_and_exact_continuation():
    """The tiny preset validates 6 times inside the early budget; early + continuation == one run."""
    import dataclasses

    from models.presets import get_preset

    assert get_preset("tiny").dense_eval_interval == 10 and get_preset("tiny").early_steps == 60
    p = dataclasses.replace(get_preset("tiny"), full_steps=40, early_frac=0.3, eval_interval=20, early_evals=4)
    assert p.early_steps == 12 and p.dense_eval_interval == 3
    import numpy as np

    from models.data import CharDataset, make_token_data

    text = "the quick brown fox jumps over the lazy dog. " * 60
    chars = "".join(sorted(set(text)))
    ids = np.array([chars.index(c) for c in text], dtype=np.uint16)
    ds = CharDataset(chars, ids[:2400], ids[2400:], "synthetic")
    data = make_token_data(ds, p.block_size, 1000, 8, 8)
    gpt, tc = p.configs(p.baseline, ds.vocab_size)
    straight = train(gpt, tc, data, 40, seed=5)
    assert straight.eval_steps == [0, 3, 6, 9, 12, 20, 40]
    early = train(gpt, tc, data, 12, seed=5)
    assert early.eval_steps == [0, 3, 6, 9, 12]
    cont = train(gpt, tc, data, 40, seed=5, state=early.state)
    assert cont.eval_steps == straight.eval_steps
    assert cont.val_losses == straight.val_losses and cont.train_losses == straight.train_losses


def test_cpu_training_keeps_freed_memory(tiny_data):
    """On Linux/glibc a CPU training sets glibc to keep freed memory (once; values unaffected)."""
    import platform
    import sys

    from models.train import _keep_freed_memory

    gpt, tc = _cfgs(tiny_data)
    r = train(gpt, tc, tiny_data, 5, seed=0)
    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert _keep_freed_memory() is expected and _keep_freed_memory() is expected
    assert train(gpt, tc, tiny_data, 5, seed=0).train_losses == r.train_losses
