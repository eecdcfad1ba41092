"""Shared fixtures: a corpus that never needs the network, and a private data cache."""
from pathlib import Path

import pytest

REAL_TEXT = Path(__file__).resolve().parents[2] / "shared/data/shakespeare_char/input.txt"
HAVE_REAL_TEXT = REAL_TEXT.is_file()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Point DIMORPH_CACHE at a temp dir so tests never read or write the user's cache."""
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
    """The real Tiny Shakespeare beside the clone, else a small synthetic corpus."""
    if HAVE_REAL_TEXT:
        return REAL_TEXT
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
