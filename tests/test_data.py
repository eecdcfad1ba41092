import pathlib

import numpy as np
import pytest
import torch

from conftest import HAVE_REAL_TEXT
from models import data
from models.data import DATA_URL, load_dataset, make_token_data, resolve_text


@pytest.mark.skipif(not HAVE_REAL_TEXT, reason="needs the real Tiny Shakespeare")
def test_shakespeare_split_sizes(shakespeare_path):
    ds = load_dataset(str(shakespeare_path))
    assert ds.vocab_size == 65
    assert (len(ds.train), len(ds.val)) == (1_003_854, 111_540)
    assert ds.train.dtype == np.uint16 and ds.chars[0] == "\n"
    assert ds.decode(ds.train[:14]) == "First Citizen:"


def test_round_trip_and_cache(shakespeare_path):
    ds = load_dataset(str(shakespeare_path))
    s = "to be or not"
    assert ds.decode(ds.encode(s)) == s
    with pytest.raises(ValueError, match="'\\\\x00'"):
        ds.encode("\x00")
    # a second prepare reads the .bin cache and gives the same arrays
    again = data._prepare(pathlib.Path(shakespeare_path))
    assert again.chars == ds.chars and np.array_equal(again.train, ds.train)
    assert len(list(data.cache_dir().glob("prepared/*/train.bin"))) == 1


def test_resolve_order(tmp_path, monkeypatch):
    explicit, env = tmp_path / "a.txt", tmp_path / "b.txt"
    explicit.write_text("abc")
    env.write_text("abd")
    cached = data.cache_dir() / "shakespeare_char" / "input.txt"
    cached.parent.mkdir(parents=True)
    cached.write_text("abe")
    assert resolve_text() == cached.resolve()
    monkeypatch.setenv("DIMORPH_DATA", str(env))
    assert resolve_text() == env.resolve()
    assert resolve_text(str(explicit)) == explicit.resolve()


def test_missing_file_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="nope.txt"):
        resolve_text(str(tmp_path / "nope.txt"))


def test_offline_error_names_the_ways_out(monkeypatch):
    def offline(url, dest, sha256=None):
        raise OSError("network is unreachable")
    monkeypatch.setattr(data, "download", offline)
    with pytest.raises(data.DataUnavailable) as e:
        resolve_text()
    msg = str(e.value)
    assert "--data" in msg and "DIMORPH_DATA" in msg and DATA_URL in msg


def test_token_windows_are_fixed(shakespeare_path):
    ds = load_dataset(str(shakespeare_path))
    td = make_token_data(ds, 32, 5000, 4, 3)
    assert td.train.dtype == torch.int64 and len(td.train) == 5000
    assert td.val_x.shape == (4, 32) and td.train_eval_x.shape == (3, 32)
    assert torch.equal(td.val_x[:, 1:], td.val_y[:, :-1])
    assert td.val_x[0, 0] == int(ds.val[0]) and td.val_y[-1, -1] == int(ds.val[-1])
    assert td.train_eval_y[-1, -1] == td.train[-1]
    assert torch.equal(make_token_data(ds, 32, 5000, 4, 3).val_x, td.val_x)
    with pytest.raises(ValueError, match="train_tokens=10"):
        make_token_data(ds, 32, 10, 4, 3)
