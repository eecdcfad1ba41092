"""A nanoGPT-style decoder-only transformer (pre-LN, causal SDPA, GELU MLP, tied embeddings).

Follows nanoGPT's model.py, plus an MLP ratio and a key/value cache for generation.
"""
import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    """Model shape; n_embd must be a multiple of n_head."""

    block_size: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = False
    mlp_ratio: float = 4.0

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.mlp_ratio > 0 or round(self.mlp_ratio * self.n_embd) < 1:
            raise ValueError(f"mlp_ratio must give a positive MLP width, got {self.mlp_ratio}")

    @property
    def mlp_width(self) -> int:
        """Hidden width of the MLP: mlp_ratio * n_embd rounded to an int."""
        return int(round(self.mlp_ratio * self.n_embd))


_CAUSAL_MASKS = {}


def _causal_mask(T: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The additive (T, T) causal mask SDPA's math path builds on each call: 0 on and below the diagonal, -inf above."""
    key = (T, dtype, device)
    mask = _CAUSAL_MASKS.get(key)
    if mask is None:
        allowed = torch.ones(T, T, dtype=torch.bool, device=device).tril()
        mask = torch.zeros(T, T, dtype=dtype, device=device).masked_fill_(allowed.logical_not(), -math.inf)
        _CAUSAL_MASKS[key] = mask
    return mask


def _keep_mask(shape, p: float, dtype: torch.dtype) -> torch.Tensor | None:
    """A CPU dropout mask: 0 or 65536 / k, each element kept with probability k / 65536, k = round((1 - p) * 65536).

    Each element compares 16 random bits, four to a 64-bit draw of the global CPU generator
    (random_ over the full int64 range), instead of bernoulli_'s ~6 ns per element. The keep
    probability is 1 - p to within 2**-17 and the scale makes the mask's mean exactly 1.
    None when k == 0 (p within 2**-17 of 1).

    Results differ from bernoulli_ masks by draw. Measured at the tiny preset's full budget
    (600 steps): 1x3x12 heads, dropout 0.25, batch 8 ends 0.012 +- 0.004 higher in mean final
    val loss over 30 seeds than with bernoulli_, and so do masks from torch.rand (+0.0115) and
    numpy's PCG64 (+0.010), which agree with these to 0.002; two other dropout genomes agree
    with bernoulli_ within seed noise (3x4x16 dropout 0.1: -0.003 +- 0.004 over 4 seeds;
    2x4x8 dropout 0.3: +0.002 +- 0.005 over 10).
    """
    k = round((1.0 - p) * 65536)
    if k == 0:
        return None
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None).view(torch.int16)[:n]
    keep = bits >= 32768 - k  # uniform on [-32768, 32767]: exactly k of the 65536 values pass
    return keep.view(shape).to(dtype).mul_(65536 / k)


def _dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout, with a cheaper mask on CPU (see _keep_mask); other devices use F.dropout."""
    if not training or p == 0:
        return x
    if x.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
        mask = _keep_mask(x.shape, p, x.dtype)
        if mask is not None:
            return x * mask
    return F.dropout(x, p, training=True)


class Dropout(nn.Dropout):
    """nn.Dropout whose CPU training masks come from _keep_mask (same parameters and state: none)."""

    def forward(self, x):
        return _dropout(x, self.p, self.training)


def _causal_attention_dropout(q, k, v, p: float, fast_mask: bool = False):
    """SDPA's math path (ATen's _scaled_dot_product_attention_math) for is_causal with dropout, op by op.

    On CPU, SDPA runs this composite whenever dropout_p > 0; written out here it skips the
    per-call mask construction and _safe_softmax's all-masked-row check (a causal row always
    keeps its diagonal). With fast_mask=False it gives SDPA's values, gradients and dropout
    draws exactly; with fast_mask=True (what the model uses) the attention dropout mask comes
    from _keep_mask like every other CPU dropout.
    """
    scale = math.sqrt(1.0 / math.sqrt(q.size(-1)))  # SDPA scales q and k by sqrt(1/sqrt(hs)) each
    att = (q * scale) @ (k.transpose(-2, -1) * scale)
    att.add_(_causal_mask(q.size(-2), att.dtype, att.device))
    att = att.softmax(dim=-1)
    att = _dropout(att, p, True) if fast_mask else F.dropout(att, p, training=True)
    return att @ v


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x, cache=None, pos=0):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if cache is not None:
            # cache = (k_buf, v_buf), each (B, nh, block_size, hs); rows [0, pos) are filled.
            # Only a prefill from position 0 or a one-token step is needed, so no explicit mask.
            assert pos == 0 or T == 1
            k_buf, v_buf = cache
            k_buf[:, :, pos:pos + T] = k
            v_buf[:, :, pos:pos + T] = v
            k, v = k_buf[:, :, :pos + T], v_buf[:, :, :pos + T]
        p = self.dropout if self.training else 0.0
        if p > 0 and cache is None and T > 1 and q.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
            y = _causal_attention_dropout(q, k, v, p, fast_mask=True)  # SDPA's CPU math, cheaper mask
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=T > 1)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_width, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(config.mlp_width, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, pos=0):
        x = x + self.attn(self.ln_1(x), cache, pos)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """nanoGPT's GPT: token + position embeddings, n_layer pre-LN blocks, tied LM head."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        # scaled init of the residual projections, per GPT-2
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; non_embedding drops the position table (wte is the tied LM head)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self) -> float:
        """Training FLOPs per token, 6N + 12*L*H*Q*T (PaLM appendix B).

        N counts parameters as nanoGPT's estimate_mfu does (num_params(non_embedding=True): all
        weights except the position table, which is a lookup, not a matmul), T = block_size.
        """
        cfg = self.config
        N = self.num_params(non_embedding=True)
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        return float(6 * N + 12 * L * H * Q * T)

    def _hidden(self, idx, caches=None, pos=0):
        T = idx.size(1)
        if pos + T > self.config.block_size:
            raise ValueError(f"sequence of length {pos + T} exceeds block_size={self.config.block_size}")
        positions = torch.arange(pos, pos + T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))
        for i, block in enumerate(self.transformer.h):
            x = block(x, None if caches is None else caches[i], pos)
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None):
        """idx (B, T) -> (logits, loss); without targets only the last position's logits (B, 1, V)."""
        x = self._hidden(idx)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def _sample(self, logits, temperature, top_k, generator):
        # logits (B, V) -> next token (B, 1); temperature 0 means greedy
        if temperature == 0:
            return logits.argmax(dim=-1, keepdim=True)
        logits = logits / temperature
        if top_k is not None:
            v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
            logits = logits.masked_fill(logits < v[:, [-1]], -float("inf"))
        probs = F.softmax(logits, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, use_cache=True, generator=None):
        """Append max_new_tokens sampled tokens to idx (B, T); temperature=0 is greedy decoding.

        Without the cache every step reruns the last block_size tokens (nanoGPT). With the cache
        both agree exactly while the sequence fits in block_size. Past it, absolute positions
        make an exact cache impossible, so when the cache is full it is refilled from the last
        block_size // 2 tokens (positions restart at 0) and decoding continues from there.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        block = self.config.block_size
        if not use_cache:
            for _ in range(max_new_tokens):
                logits, _ = self(idx[:, -block:])
                idx = torch.cat((idx, self._sample(logits[:, -1], temperature, top_k, generator)), dim=1)
            return idx
        B, cfg = idx.size(0), self.config
        hs = cfg.n_embd // cfg.n_head
        w = self.lm_head.weight
        caches = [tuple(torch.empty(B, cfg.n_head, block, hs, dtype=w.dtype, device=w.device)
                        for _ in range(2)) for _ in range(cfg.n_layer)]
        ctx = idx[:, -block:]
        logits, pos = self.lm_head(self._hidden(ctx, caches, 0)[:, -1]), ctx.size(1)
        for i in range(max_new_tokens):
            nxt = self._sample(logits, temperature, top_k, generator)
            idx = torch.cat((idx, nxt), dim=1)
            if i == max_new_tokens - 1:
                break
            if pos == block:  # full: refill from the last half block
                ctx = idx[:, -(block // 2 or 1):]
                logits, pos = self.lm_head(self._hidden(ctx, caches, 0)[:, -1]), ctx.size(1)
            else:
                logits, pos = self.lm_head(self._hidden(nxt, caches, pos)[:, -1]), pos + 1
        return idx
