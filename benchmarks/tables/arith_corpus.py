"""The text of the `arith` table: arithmetic facts, generated reproducibly (no download).

    python benchmarks/tables/arith_corpus.py --out outputs/arith.txt

Lines like `417+86=503`, `52-907=-855` and `31*24=744`, drawn with random.Random(--seed): a
character-level language whose curves differ from Tiny Shakespeare's (13 + 4 characters, digit
statistics learnt in a few steps, carrying and multiplication much later). The same seed gives the
same bytes on every machine (the file's sha256 is printed and recorded by evo.bench build).
"""
import argparse
import hashlib
import random
from pathlib import Path


def corpus(n_lines: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        op = rng.choice("+-*")
        if op == "*":
            a, b = rng.randrange(100), rng.randrange(100)
            lines.append(f"{a}*{b}={a * b}")
        else:
            a, b = rng.randrange(1000), rng.randrange(1000)
            lines.append(f"{a}{op}{b}={a + b if op == '+' else a - b}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lines", type=int, default=90_000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    text = corpus(a.lines, a.seed)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(f"{a.out}: {len(text):,} bytes, sha256 {hashlib.sha256(text.encode()).hexdigest()}")


if __name__ == "__main__":
    main()
