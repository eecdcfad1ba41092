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


def test_cpu_dropout_mask(one_thread):
    """CPU dropout: keeps each element with probability k / 65536 ~ 1 - p, scales by 65536 / k, seeded."""
    from models.gpt import _dropout, _keep_mask

    for p in (0.1, 0.25, 0.3):
        torch.manual_seed(0)
        mask = _keep_mask((1000, 1000), p, torch.float32)
        k = round((1 - p) * 65536)
        assert mask.unique().tolist() == [0.0, torch.tensor(65536 / k).item()]  # 65536 / k in float32
        kept = (mask > 0).double().mean().item()
        assert abs(kept - (1 - p)) < 5 * math.sqrt(p * (1 - p) / 1e6)  # 5 sigma
        assert abs(mask.double().mean().item() - 1) < 5 * math.sqrt(p / (1 - p) / 1e6)
        torch.manual_seed(0)
        assert torch.equal(_keep_mask((1000, 1000), p, torch.float32), mask)  # the seed decides
    # odd sizes, other dtypes; nothing happens in eval mode or at p = 0
    assert _keep_mask((3, 5, 7), 0.2, torch.float64).dtype == torch.float64
    x = torch.randn(3, 5, 7, requires_grad=True)
    assert _dropout(x, 0.2, False) is x and _dropout(x, 0.0, True) is x
    torch.manual_seed(1)
    y = _dropout(x, 0.2, True)
    y.backward(torch.ones_like(y))
    torch.manual_seed(1)
    mask = _keep_mask(x.shape, 0.2, torch.float32)
    assert torch.equal(y, x * mask) and torch.equal(x.grad, mask)
    assert torch.equal(_dropout(x, 1 - 1e-6, True), torch.zeros_like(x))  # k == 0: F.dropout drops all


def test_train_mode_dropout_is_seeded_and_eval_is_not_dropped():
    torch.manual_seed(0)
    model = GPT(GPTConfig(16, 65, 2, 2, 32, dropout=0.2))
    x, y = torch.randint(65, (2, 4, 16), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(2):
        torch.manual_seed(7)
        losses.append(model.train()(x, y)[1].item())
    torch.manual_seed(8)
    other = model(x, y)[1].item()
    e1, e2 = model.eval()(x, y)[1].item(), model(x, y)[1].item()
    assert losses[0] == losses[1] != other and e1 == e2 != losses[0]
