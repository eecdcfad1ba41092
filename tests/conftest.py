"""Shared fixtures: a corpus that never needs the network, and a private data cache.

The corpus the tests train on (`shakespeare_path`) is $DIMORPH_DATA when it is set, else the real
Tiny Shakespeare beside the clone (../shared/data/shakespeare_char/input.txt), else a small synthetic
corpus. A number a test asserts about training must hold on each of them: compare with a value
computed from the corpus itself (ln(vocab), a bigram model's loss), never with a constant.
"""
import hashlib
import os
from pathlib import Path

import pytest

from models.data import DATA_SHA256

REAL_TEXT = Path(__file__).resolve().parents[2] / "shared/data/shakespeare_char/input.txt"


def pick_corpus(environ, real_text: Path = REAL_TEXT) -> Path | None:
    """$DIMORPH_DATA if set, else the real text if present, else None (the synthetic corpus)."""
    if environ.get("DIMORPH_DATA"):
        return Path(environ["DIMORPH_DATA"]).expanduser()
    return real_text if real_text.is_file() else None


def is_tiny_shakespeare(path: Path | None) -> bool:
    """Whether the file is Karpathy's Tiny Shakespeare (by its sha256)."""
    try:
        return path is not None and hashlib.sha256(path.read_bytes()).hexdigest() == DATA_SHA256
    except OSError:
        return False


CORPUS = pick_corpus(os.environ)  # read before any test clears DIMORPH_DATA
HAVE_REAL_TEXT = is_tiny_shakespeare(CORPUS)
"""the tests' corpus is the real Tiny Shakespeare (tests of its exact sizes need it)"""


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Point DIMORPH_CACHE at a temp dir and clear DIMORPH_DATA, so that no test reads or writes
    the user's cache and each sees the environment it sets (the corpus is `shakespeare_path`)."""
    monkeypatch.setenv("DIMORPH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("DIMORPH_DATA", raising=False)


@pytest.fixture
def one_thread():
    """torch on one thread for the test (tiny models: more threads only add sync overhead)."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def shakespeare_path(tmp_path_factory) -> Path:
    """$DIMORPH_DATA, else the real Tiny Shakespeare beside the clone, else a small synthetic corpus."""
    if CORPUS is not None:
        if not CORPUS.is_file():
            pytest.fail(f"DIMORPH_DATA={str(CORPUS)!r} is not a file: point it at the corpus the tests "
                        f"should train on, or unset it", pytrace=False)
        return CORPUS.resolve()
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "KING:", "QUEEN:",
             "my", "lord", "what", "say", "you", "?", "!", ",", "."]
    lines = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(i % 9 + 3)) for i in range(3000)]
    path = tmp_path_factory.mktemp("corpus") / "input.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_data(shakespeare_path):
    """TokenData for block 16 on the first 20k training tokens, 8 fixed windows each."""
    from models.data import load_dataset, make_token_data
    return make_token_data(load_dataset(str(shakespeare_path)), 16, 20_000, 8, 8)
