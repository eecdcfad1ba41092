"""Checkpoint and resume: an append-only JSON-lines journal of finished work plus a JSON snapshot.

Resume replays the search from its seed: every journaled evaluation or side effect is taken from the
journal instead of being redone, so a run killed at any moment (SIGKILL included) and resumed reaches
the same result as an uninterrupted one, retrains nothing finished and logs nothing twice.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

FORMAT, VERSION = "dimorph-checkpoint", 1


class CheckpointError(ValueError):
    """A checkpoint that is corrupt, foreign, or from a different search."""


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Checkpoint:
    """`out/checkpoint.json` (snapshot, rewritten atomically) + `out/journal.jsonl` (append-only)."""

    def __init__(self, out_dir: Path, search: dict, resume: bool):
        self.dir = Path(out_dir)
        self.path = self.dir / "checkpoint.json"
        self.journal_path = self.dir / "journal.jsonl"
        self.search = search
        self.journal: dict[str, object] = {}
        self.run_id: str | None = None
        if resume:
            self._load()
        elif self.path.exists() or self.journal_path.exists():
            raise CheckpointError(f"{self.dir} already holds a search; pass --resume to continue it "
                                  f"or choose another --out")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.states = self.dir / "states"
        self.states.mkdir(exist_ok=True)
        self._fh = None

    def _load(self) -> None:
        if not self.path.exists():
            raise CheckpointError(f"no checkpoint to resume at {self.path}")
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"corrupt checkpoint {self.path}: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CheckpointError(f"{self.path} is not a Dimorph checkpoint (format={doc.get('format') if isinstance(doc, dict) else None!r})")
        if doc.get("version") != VERSION:
            raise CheckpointError(f"{self.path} has checkpoint version {doc.get('version')!r}, expected {VERSION}")
        if doc.get("search") != self.search:
            diff = {k: (doc.get("search", {}).get(k), v) for k, v in self.search.items()
                    if doc.get("search", {}).get(k) != v}
            raise CheckpointError(f"{self.path} belongs to a different search; differing settings "
                                  f"(checkpoint, now): {diff}")
        self.run_id = doc.get("run_id")
        if self.journal_path.exists():
            lines = self.journal_path.read_text().splitlines()
            for n, line in enumerate(lines, 1):
                try:
                    entry = json.loads(line)
                    self.journal[entry["id"]] = entry["value"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    if n == len(lines):  # only a last line cut short by a kill is forgiven
                        self._truncate_last_line()
                        break
                    raise CheckpointError(f"corrupt journal {self.journal_path} at line {n}") from None

    def _truncate_last_line(self) -> None:
        text = self.journal_path.read_text()
        keep = text[: text.rstrip("\n").rfind("\n") + 1]
        _atomic_write(self.journal_path, keep)

    def get(self, event_id: str, default=None):
        return self.journal.get(event_id, default)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self.journal

    def record(self, event_id: str, value) -> None:
        """Append one finished event to the journal (flushed and fsynced before returning)."""
        if self._fh is None:
            self._fh = open(self.journal_path, "a")
        self._fh.write(json.dumps({"id": event_id, "value": value}, allow_nan=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.journal[event_id] = value

    def once(self, event_id: str, fn):
        """Run a side effect once per search: on a replay its journaled value is returned instead."""
        if event_id in self.journal:
            return self.journal[event_id]
        value = fn()
        self.record(event_id, value)
        return value

    def snapshot(self, state: dict) -> None:
        """Rewrite checkpoint.json atomically: populations, archive, RNG state, logbook, compute."""
        doc = {"format": FORMAT, "version": VERSION, "search": self.search, "run_id": self.run_id,
               "n_events": len(self.journal), **state}
        _atomic_write(self.path, json.dumps(doc, indent=1, allow_nan=True))

    def state_path(self, key: str) -> str:
        return str(self.states / f"{key.replace('/', '_')}.pt")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_snapshot(path: str | Path) -> dict:
    """Load a checkpoint.json for export/inspection, with the same checks as resume."""
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoint.json"
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read checkpoint {p}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a Dimorph checkpoint")
    return doc
