"""Inference speed by the paper's protocol: batch 1, one-character prompt, sampled tokens."""
import time

import torch

from models.gpt import GPT


@torch.no_grad()
def inference_rates(model: GPT, n_samples: int = 10, new_tokens: int = 500, temperature: float = 0.8,
                    top_k: int | None = 200, use_cache: bool = True, device: str = "cpu",
                    seed: int = 0) -> list[float]:
    """The tokens/s of each of n_samples generations of new_tokens from the one-token prompt [0]
    (one seeded generator for all of them; the model's train/eval mode is restored)."""
    if n_samples < 1 or new_tokens < 1:
        raise ValueError(f"n_samples and new_tokens must be >= 1, got {n_samples}, {new_tokens}")
    dev = torch.device(device)
    was_training = model.training
    model.eval().to(dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    rates = []
    for _ in range(n_samples):
        idx = torch.zeros((1, 1), dtype=torch.long, device=dev)  # token 0 is "\n" in shakespeare_char
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        model.generate(idx, new_tokens, temperature=temperature, top_k=top_k, use_cache=use_cache,
                       generator=gen)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        rates.append(new_tokens / (time.perf_counter() - t0))
    model.train(was_training)
    return rates


def measure_inference(model: GPT, n_samples: int = 10, new_tokens: int = 500, temperature: float = 0.8,
                      top_k: int | None = 200, use_cache: bool = True, device: str = "cpu",
                      seed: int = 0) -> float:
    """Mean over n_samples of tokens/s generating new_tokens from the one-token prompt [0]."""
    rates = inference_rates(model, n_samples, new_tokens, temperature, top_k, use_cache, device, seed)
    return sum(rates) / len(rates)
