import math

import pytest
import torch

from models.gpt import GPT, GPTConfig

CFG = GPTConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32)


def test_forward_shapes_and_initial_loss():
    torch.manual_seed(0)
    model = GPT(CFG)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(65, (2, 4, 16), generator=g)
    logits, loss = model(x, y)
    assert logits.shape == (4, 16, 65)
    assert abs(loss.item() - math.log(65)) < 0.1
    logits, loss = model(x[:, :5])
    assert logits.shape == (4, 1, 65) and loss is None


def test_param_count_and_flops():
    model = GPT(CFG)
    # wte 65*32 (tied head) + wpe 16*32 + per layer: 2 LN 64 + attn 32*96+32*32 + mlp 2*32*128, + ln_f 32
    per_layer = 64 + 32 * 96 + 32 * 32 + 2 * 32 * 128
    n = 65 * 32 + 16 * 32 + 2 * per_layer + 32
    assert model.num_params() == n
    assert model.num_params(non_embedding=True) == n - 16 * 32
    assert model.flops_per_token() == 6 * (n - 16 * 32) + 12 * 2 * 2 * 16 * 16
    assert GPT(GPTConfig(16, 65, 1, 2, 32, mlp_ratio=2.5)).transformer.h[0].mlp.c_fc.out_features == 80


def test_bad_config_names_the_values():
    with pytest.raises(ValueError, match="n_embd=30.*n_head=4"):
        GPTConfig(16, 65, 1, 4, 30)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(16, 65, 1, 2, 32, dropout=1.0)
    with pytest.raises(ValueError, match="n_layer.*0"):
        GPTConfig(16, 65, 0, 2, 32)


def _sharp_model():
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    # larger weights than the 0.02 init, so that greedy argmaxes are far from ties
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def test_kv_cache_greedy_equals_no_cache(one_thread):
    model = _sharp_model()
    prompt = torch.tensor([[0, 5, 9], [3, 3, 1]])
    with_cache = model.generate(prompt, 13, temperature=0, use_cache=True)
    without = model.generate(prompt, 13, temperature=0, use_cache=False)
    assert with_cache.shape == (2, 16)
    assert torch.equal(with_cache, without)
    # the cached logits match a full forward pass to float precision
    hidden = model._hidden(with_cache[:, :-1])
    full = model.lm_head(hidden)[:, -1]
    caches = [tuple(torch.empty(2, 2, 16, 16) for _ in range(2)) for _ in range(2)]
    model._hidden(with_cache[:, :3], caches, 0)
    step = None
    for t in range(3, 15):
        step = model.lm_head(model._hidden(with_cache[:, t:t + 1], caches, t))[:, -1]
    assert torch.allclose(step, full, atol=1e-5)


def test_generate_past_block_and_sampling(one_thread):
    model = _sharp_model()
    out = model.generate(torch.zeros(1, 1, dtype=torch.long), 40, use_cache=True,
                         top_k=5, generator=torch.Generator().manual_seed(0))
    again = model.generate(torch.zeros(1, 1, dtype=torch.long), 40, use_cache=True,
                           top_k=5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 41) and torch.equal(out, again)
    assert model.generate(torch.zeros(1, 1, dtype=torch.long), 40, use_cache=False).shape == (1, 41)


def test_cpu_attention_with_dropout_is_sdpas_math_path(one_thread):
    """The written-out causal attention gives SDPA's values, gradients and dropout draws exactly."""
    import torch.nn.functional as F

    from models.gpt import _causal_attention_dropout

    g = torch.Generator().manual_seed(0)
    for shape, p in (((4, 2, 16, 8), 0.1), ((3, 3, 7, 12), 0.3), ((2, 1, 1, 4), 0.2)):
        base = [torch.randn(shape, generator=g) for _ in range(3)]
        grad_out = torch.randn(shape, generator=g)
        outs = []
        for attend in (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True),
                       lambda q, k, v: _causal_attention_dropout(q, k, v, p)):
            q, k, v = (t.clone().requires_grad_() for t in base)
            torch.manual_seed(5)
            y = attend(q, k, v)
            y.backward(grad_out)
            outs.append((y.detach(), q.grad, k.grad, v.grad, torch.get_rng_state()))
        for a, b in zip(*outs):
            assert torch.equal(a, b)
