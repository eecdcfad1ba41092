"""Character-level Tiny Shakespeare: locate the text, encode it, split it, cut fixed windows.

Same preparation as nanoGPT's data/shakespeare_char/prepare.py: the vocabulary is the sorted set
of characters, the first 90% of the text is train and the last 10% val, tokens are uint16.

Every problem with the data (missing, unreadable, unverifiable, unusable for the requested windows)
raises SetupError, the error of the environment or configuration that no training can get past: an
evaluation lets it through instead of recording a failed training. This module imports torch only
where tensors are made, so that light processes can import SetupError.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import tempfile
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

DATA_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
DATA_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TRAIN_FRAC = 0.9


class SetupError(ValueError):
    """The environment or configuration is unusable (data, device, genes): stop, do not retry."""


class DataUnavailable(SetupError, RuntimeError):
    """The text is neither given, cached nor downloadable."""


def check_device(device: str) -> None:
    """SetupError unless `device` names a torch device this process can use."""
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise SetupError(f"bad device {device!r}: {e}") from None
    if d.type not in ("cpu", "cuda", "mps"):
        raise SetupError(f"device must be cpu, cuda, cuda:N or mps, got {device!r}")
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise SetupError(f"device {device!r}: this torch ({torch.__version__}) sees no CUDA GPU; "
                             f"use --device cpu or install a CUDA build of torch")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise SetupError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) "
                             f"are visible")
    if d.type == "mps" and not torch.backends.mps.is_available():
        raise SetupError(f"device {device!r}: MPS is not available in this torch")


def cache_dir() -> pathlib.Path:
    """Per-user cache: $DIMORPH_CACHE, else $XDG_CACHE_HOME/dimorph, else ~/.cache/dimorph."""
    if os.environ.get("DIMORPH_CACHE"):
        return pathlib.Path(os.environ["DIMORPH_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".cache"
    return base / "dimorph"


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    # write to a temp file in the same folder, then rename: readers never see half a file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def download(url: str, dest: pathlib.Path, sha256: str | None = None) -> None:
    """Fetch url into dest atomically; with sha256 given, a mismatch deletes the file and raises."""
    with urllib.request.urlopen(url, timeout=60) as r:
        data = r.read()
    _atomic_write(dest, data)
    if sha256 is not None and _sha256(dest) != sha256:
        dest.unlink(missing_ok=True)
        raise DataUnavailable(f"downloaded {url} has the wrong sha256; deleted {dest}")


def resolve_text(path: str | None = None) -> pathlib.Path:
    """Find the text: explicit path > $DIMORPH_DATA > the per-user cache > a one-time download."""
    if path is not None:
        p = pathlib.Path(path).expanduser()
        if not p.is_file():
            raise SetupError(f"data file {path!r} (--data) {_not_a_file(p)}; pass a UTF-8 text file "
                             f"with --data PATH or set DIMORPH_DATA=PATH (without either, Tiny "
                             f"Shakespeare is used)")
        return p.resolve()
    env = os.environ.get("DIMORPH_DATA")
    if env:
        p = pathlib.Path(env).expanduser()
        if not p.is_file():
            raise SetupError(f"DIMORPH_DATA={env!r} {_not_a_file(p)}; point it at a UTF-8 text file, "
                             f"pass --data PATH instead, or unset it to use Tiny Shakespeare")
        return p.resolve()
    cached = cache_dir() / "shakespeare_char" / "input.txt"
    if cached.is_file():
        return cached.resolve()
    try:
        download(DATA_URL, cached, DATA_SHA256)
    except OSError as e:  # URLError, timeouts, read-only cache ...
        raise DataUnavailable(
            f"Tiny Shakespeare not found and the download failed ({e}). Pass a text file with "
            f"--data PATH, set DIMORPH_DATA=PATH, or fetch {DATA_URL} to {cached}"
        ) from e
    return cached.resolve()


def _not_a_file(p: pathlib.Path) -> str:
    return "is not a file" if p.exists() else "does not exist"


@dataclass(frozen=True)
class CharDataset:
    """A char-level corpus: vocabulary plus uint16 train/val token arrays."""

    chars: str
    train: np.ndarray
    val: np.ndarray
    source: str

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters."""
        return len(self.chars)

    @functools.cached_property
    def _stoi(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def encode(self, s: str) -> list[int]:
        """String -> token ids; an unknown character raises ValueError."""
        try:
            return [self._stoi[c] for c in s]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids) -> str:
        """Token ids -> string."""
        return "".join(self.chars[int(i)] for i in ids)


def _read_prepared(folder: pathlib.Path, text_path: pathlib.Path) -> CharDataset | None:
    """The cached encoding of a text, or None when it is absent or damaged (then it is rebuilt)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        train = np.fromfile(folder / "train.bin", dtype=np.uint16)
        val = np.fromfile(folder / "val.bin", dtype=np.uint16)
        if len(train) == meta["n_train"] and len(val) == meta["n_val"]:
            return CharDataset(meta["chars"], train, val, str(text_path))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _prepare(text_path: pathlib.Path) -> CharDataset:
    try:
        raw = text_path.read_bytes()
    except OSError as e:
        raise SetupError(f"cannot read the data file {text_path}: {e.strerror or e}") from None
    key = hashlib.sha256(raw).hexdigest()
    folder = cache_dir() / "prepared" / key[:16]
    if (folder / "meta.json").is_file():
        ds = _read_prepared(folder, text_path)
        if ds is not None:
            return ds
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SetupError(f"{text_path} is not UTF-8 text: {e}") from None
    chars = "".join(sorted(set(text)))
    if len(chars) > 65535:
        raise SetupError(f"{text_path} has {len(chars)} distinct characters, more than uint16 holds")
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = int(len(ids) * TRAIN_FRAC)
    train, val = ids[:n], ids[n:]
    if len(val) < 2:
        raise SetupError(f"{text_path} is too short ({len(text)} characters) to split")
    try:
        _atomic_write(folder / "train.bin", train.tobytes())
        _atomic_write(folder / "val.bin", val.tobytes())
        meta = {"chars": chars, "n_train": len(train), "n_val": len(val), "sha256": key}
        _atomic_write(folder / "meta.json", json.dumps(meta).encode())
    except OSError:
        pass  # a read-only cache only costs the re-encoding next time
    return CharDataset(chars, train, val, str(text_path))


@functools.lru_cache(maxsize=8)
def _load_cached(text_path: pathlib.Path) -> CharDataset:
    return _prepare(text_path)


def load_dataset(path: str | None = None) -> CharDataset:
    """Resolve the text (see resolve_text) and return its encoded 90/10 split, cached per process."""
    return _load_cached(resolve_text(path))


@dataclass
class TokenData:
    """What the trainer consumes: training tokens plus fixed eval windows of shape (n, block)."""

    train: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    train_eval_x: torch.Tensor
    train_eval_y: torch.Tensor
    vocab_size: int
    block_size: int


def _windows(tokens: torch.Tensor, block_size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    # evenly spaced starts over the whole array, independent of any seed: (n, block)
    import torch

    last = len(tokens) - block_size - 1
    starts = torch.linspace(0, last, n).round().long()
    offsets = torch.arange(block_size)
    idx = starts[:, None] + offsets[None, :]
    return tokens[idx], tokens[idx + 1]


def make_token_data(ds: CharDataset, block_size: int, train_tokens: int | None = None,
                    n_val_windows: int = 16, n_train_eval_windows: int = 16) -> TokenData:
    """Cut the training subset and the fixed validation/train-eval windows for one block size."""
    import torch

    if block_size < 1:
        raise SetupError(f"block_size must be >= 1, got {block_size}")
    if n_val_windows < 1 or n_train_eval_windows < 1:
        raise SetupError(f"window counts must be >= 1, got {n_val_windows}, {n_train_eval_windows}")
    n_train = len(ds.train) if train_tokens is None else train_tokens
    if not block_size + 2 <= n_train <= len(ds.train):
        raise SetupError(f"train_tokens={train_tokens} must be in [{block_size + 2}, {len(ds.train)}] "
                         f"for the data {ds.source}")
    if len(ds.val) < block_size + 2:
        raise SetupError(f"block_size={block_size} is too long for the {len(ds.val)} validation "
                         f"tokens of {ds.source}")
    train = torch.from_numpy(ds.train[:n_train].astype(np.int64))
    val = torch.from_numpy(ds.val.astype(np.int64))
    val_x, val_y = _windows(val, block_size, n_val_windows)
    tr_x, tr_y = _windows(train, block_size, n_train_eval_windows)
    return TokenData(train, val_x, val_y, tr_x, tr_y, ds.vocab_size, block_size)
