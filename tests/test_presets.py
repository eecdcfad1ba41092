import random

import pytest
import torch

from models.gpt import GPT
from models.presets import PRESETS, ChoiceParam, FloatParam, IntParam, get_preset


def test_params_round_trip():
    p = IntParam("n_layer", 1, 3)
    assert [p.decode(u) for u in (0.0, 0.33, 0.34, 0.99, 1.0, 1.7, -2)] == [1, 1, 2, 3, 3, 3, 1]
    assert p.encode(2) == 0.5 and p.decode(p.encode(3)) == 3
    c = ChoiceParam("head_size", (8, 12, 16))
    assert c.encode(16) == pytest.approx(5 / 6) and c.decode(0.5) == 12
    f = FloatParam("lr", 1e-4, 1e-2, log=True)
    assert f.decode(0.5) == 1e-3 and f.decode(f.encode(3e-3)) == 3e-3
    with pytest.raises(ValueError, match="n_layer=5"):
        p.encode(5)
    with pytest.raises(ValueError, match="head_size=10"):
        c.encode(10)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_baseline_round_trip(name):
    preset = get_preset(name)
    assert preset.decode(preset.encode(preset.baseline)) == preset.baseline


def test_paper_baseline_is_nanogpt():
    preset = get_preset("paper")
    gpt, tc = preset.configs(preset.baseline, 65, device="cuda")
    assert (gpt.n_layer, gpt.n_head, gpt.n_embd, gpt.block_size, gpt.dropout) == (6, 6, 384, 256, 0.2)
    assert (tc.lr, tc.min_lr, tc.batch_size, tc.max_steps, tc.warmup_steps) == (1e-3, 1e-4, 64, 5000, 100)
    assert (tc.beta2, tc.weight_decay, tc.grad_clip, tc.dtype, tc.compile) == (0.99, 0.1, 1.0, "bfloat16", True)
    assert preset.early_steps == 500 and preset.n_val_windows == 200 * 64
    assert GPT(gpt).num_params(non_embedding=True) == 10_646_784  # nanoGPT prints 10.65M


def test_tiny_baseline():
    preset = get_preset("tiny")
    gpt, tc = preset.configs(preset.baseline, 65)
    assert (gpt.n_layer, gpt.n_head, gpt.n_embd, gpt.dropout, tc.lr, tc.threads) == (2, 2, 32, 0.1, 1e-3, 1)
    assert preset.early_steps % preset.eval_interval == 0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_random_genomes_build(name):
    preset = get_preset(name)
    rng = random.Random(0)
    for i in range(500):
        genes = preset.decode([rng.random() for _ in preset.space])
        gpt, tc = preset.configs(genes, 65)  # GPTConfig and TrainConfig validate eagerly
        assert gpt.n_embd == genes["n_head"] * genes["head_size"]
        assert preset.decode(preset.encode(genes)) == genes
        if i % 50 == 0:  # building is slower: 10 of them, on meta (no weights allocated)
            with torch.device("meta"):
                C, L, V, T, H, b = gpt.n_embd, gpt.n_layer, gpt.vocab_size, gpt.block_size, gpt.mlp_width, gpt.bias
                ln = C * (2 if b else 1)  # a LayerNorm: weight (and bias)
                per_layer = 2 * ln + (C * 3 * C + 3 * C * b) + (C * C + C * b) + (C * H + H * b) + (H * C + C * b)
                assert GPT(gpt).num_params() == V * C + T * C + L * per_layer + ln  # wte tied to the head
    assert preset.sample(random.Random(1)) == preset.sample(random.Random(1))


def test_unknown_preset_and_bad_genome():
    with pytest.raises(ValueError, match="'huge'.*paper.*tiny"):
        get_preset("huge")
    with pytest.raises(ValueError, match="3 values"):
        get_preset("tiny").decode([0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="n_layers"):
        get_preset("tiny").configs({"n_layers": 2}, 65)
