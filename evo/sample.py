"""Generate text with the best model of a search, as nanoGPT's sample.py does.

python -m evo.sample --run-id RUN_ID [--tracking-uri URI] [--num-samples 3] [--max-new-tokens 300]
    [--temperature 0.8] [--top-k 200] [--start "\\n"] [--seed 0] [--device cpu]

RUN_ID is the search's parent run (the run id its summary prints); the model is the one the search
logged there (`mlflow.pytorch`, see evo.tracking.load_model). Decoding uses the KV cache. Each sample
is printed with its prompt, followed by a line of dashes. The same seed gives the same samples.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PROG = "python -m evo.sample"
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Sample text from the best model a Dimorph search logged to MLflow.")
    p.add_argument("--run-id", required=True, help="the search's MLflow parent run id (printed in its summary)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    p.add_argument("--num-samples", type=int, default=3, help="samples to draw (default 3)")
    p.add_argument("--max-new-tokens", type=int, default=300, help="characters generated per sample (default 300)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="1.0 samples the model's distribution, lower is more conservative, 0 is greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=200, help="sample among the k most likely characters (default 200)")
    p.add_argument("--start", default="\n",
                   help=r'the prompt (default a newline); \n, \t and \\ are read as escapes; FILE:path reads it from a file')
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    return p


def prompt_text(start: str) -> str:
    """The prompt: the contents of a FILE:path, else `start` with \\n, \\t and \\\\ unescaped."""
    if start.startswith("FILE:"):
        return Path(start[len("FILE:"):]).expanduser().read_text(encoding="utf-8")
    return re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m.group(1)], start)


def _check(args) -> str | None:
    if args.num_samples < 1:
        return f"--num-samples must be >= 1, got {args.num_samples}"
    if args.max_new_tokens < 1:
        return f"--max-new-tokens must be >= 1, got {args.max_new_tokens}"
    if not args.temperature >= 0:
        return f"--temperature must be >= 0, got {args.temperature}"
    if args.top_k < 1:
        return f"--top-k must be >= 1, got {args.top_k}"
    return None


def sample(model, vocab: str, start: str, num_samples: int, max_new_tokens: int, temperature: float,
           top_k: int, seed: int, device: str = "cpu") -> list[str]:
    """num_samples texts (prompt included), drawn with the KV cache from one seeded generator."""
    import torch

    stoi = {c: i for i, c in enumerate(vocab)}
    unknown = sorted(set(start) - set(stoi))
    if unknown:
        raise ValueError(f"the prompt has characters the model's vocabulary lacks: {unknown}")
    if not start:
        raise ValueError("the prompt is empty; give --start at least one character")
    dev = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator(device=dev).manual_seed(seed)
    model = model.to(dev).eval()
    x = torch.tensor([[stoi[c] for c in start]], dtype=torch.long, device=dev)
    out = []
    with torch.no_grad():
        for _ in range(num_samples):
            y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, use_cache=True, generator=gen)
            out.append("".join(vocab[int(i)] for i in y[0].tolist()))
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    problem = _check(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from evo.tracking import TrackingError, load_model
    from models.data import SetupError, check_device

    try:
        check_device(args.device)
        start = prompt_text(args.start)
        model, meta = load_model(args.run_id, args.tracking_uri)
        vocab = meta.get("vocab")
        if not vocab:
            raise TrackingError(f"the model of run {args.run_id} carries no vocabulary in its metadata")
        texts = sample(model, vocab, start, args.num_samples, args.max_new_tokens, args.temperature,
                       args.top_k, args.seed, args.device)
    except (TrackingError, SetupError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for text in texts:
        print(text)
        print("---------------")
    return 0


if __name__ == "__main__":
    sys.exit(main())
