"""Checkpoint and resume: an append-only JSON-lines journal of finished work plus a JSON snapshot.

Resume replays the search from its seed: every journaled evaluation or side effect is taken from the
journal instead of being redone, so a run killed at any moment (SIGKILL included) and resumed reaches
the same result as an uninterrupted one, retrains nothing finished and logs nothing twice.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None

FORMAT, VERSION = "dimorph-checkpoint", 1
LOCK_NAME = "dimorph.lock"
GROWS = ("gens",)  # settings a resume may raise: a finished search can be extended
ADDED = ("data", "steady", "start", "champion", "female_fitness")  # settings older checkpoints did not record: compared only when recorded


class CheckpointError(ValueError):
    """A checkpoint that is corrupt, foreign, or from a different search."""


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Checkpoint:
    """`out/checkpoint.json` (snapshot, rewritten atomically) + `out/journal.jsonl` (append-only).

    The folder is locked (`out/dimorph.lock`, an exclusive flock) from construction to close(), so a
    second process on the same folder (say a --resume while the search still runs) stops at once.
    """

    def __init__(self, out_dir: Path, search: dict, resume: bool):
        self.dir = Path(out_dir)
        self.path = self.dir / "checkpoint.json"
        self.journal_path = self.dir / "journal.jsonl"
        self.lock_path = self.dir / LOCK_NAME
        self.search = search
        self.journal: dict[str, object] = {}
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        self._fh = self._lock = None
        self.rebuilt = False  # checkpoint.json was unreadable and its head was rebuilt from the journal
        if resume:
            self._check(self._read())  # a foreign or corrupt checkpoint is refused before anything is written
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.states = self.dir / "states"
            self.states.mkdir(exist_ok=True)
        except OSError as e:
            raise _unwritable(self.dir, e) from None
        self._acquire()
        try:
            if resume:
                self._load()
            else:  # under the lock: a search running here is reported as such, not as a finished one
                self._refuse_existing()
        except BaseException:
            self.close()
            raise

    def _refuse_existing(self) -> None:
        if self.path.exists() or self.journal_path.exists():
            raise CheckpointError(f"{self.dir} already holds a search; pass --resume to continue it "
                                  f"or choose another --out")

    def _acquire(self) -> None:
        self._lock = lock_folder(self.dir, self.lock_path, "search")

    def _read(self) -> dict:
        if not self.path.exists() and not self.journal_path.exists():
            raise CheckpointError(f"no checkpoint to resume at {self.path}")
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError) as e:  # ValueError: bad JSON, or bytes that are not UTF-8
            doc = self._rebuilt(f"{e}")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CheckpointError(f"{self.path} is not a Dimorph checkpoint (format={doc.get('format') if isinstance(doc, dict) else None!r})")
        if doc.get("version") != VERSION:
            raise CheckpointError(f"{self.path} has checkpoint version {doc.get('version')!r}, expected {VERSION}")
        return doc

    def _rebuilt(self, why: str) -> dict:
        """The snapshot's head (settings, MLflow run) from the journal's `meta` entries, when
        checkpoint.json is unreadable; the rest of the snapshot is rebuilt by the resumed search."""
        meta = None
        try:
            for line in self.journal_path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("id") == "meta" and isinstance(entry.get("value"), dict):
                    meta = entry["value"]
        except OSError:
            pass
        if meta is None:
            raise CheckpointError(f"corrupt checkpoint {self.path} ({why}), and its journal {self.journal_path} "
                                  f"does not record the search's settings (a search of an older version); "
                                  f"start the search again in a new --out") from None
        print(f"warning: {self.path} is unreadable ({why}); rebuilt from the journal", file=sys.stderr)
        self.rebuilt = True
        return {"format": FORMAT, "version": VERSION, **meta}

    def _check(self, doc: dict) -> None:
        """The checkpoint must be of this search: same settings, except those that may grow (gens)."""
        old = doc.get("search") if isinstance(doc.get("search"), dict) else {}
        keys = [k for k in self.search if k not in GROWS and not (k in ADDED and k not in old)]
        diff = {k: (old.get(k), self.search[k]) for k in keys if old.get(k) != self.search[k]}
        diff.update({k: (v, None) for k, v in old.items() if k not in self.search})
        if diff:
            hint = (" (data is the sha256 of the dataset text: this command reads another dataset than the "
                    "search was started with)") if "data" in diff else (
                " (the default --start became bracket in v3: resume a search started before with "
                "--start full)") if set(diff) == {"start"} and diff["start"][0] == "full" else (
                " (a --steady search cannot be extended with more --gens: its last tasks drained "
                "instead of breeding; start a new --out)") if "steady_gens" in diff else ""
            raise CheckpointError(f"{self.path} belongs to a different search; differing settings "
                                  f"(checkpoint, now): {diff}{hint}")
        for k in GROWS:
            if k in self.search and isinstance(old.get(k), int) and self.search[k] < old[k]:
                raise CheckpointError(f"{self.path} is a search of {k}={old[k]}; it can be extended "
                                      f"(--{k} {old[k]} or more), not shortened to {k}={self.search[k]}")

    def _load(self) -> None:
        doc = self._read()
        self._check(doc)
        self.run_id = doc.get("run_id")
        self.tracking_uri = doc.get("tracking_uri")
        try:
            entries = read_jsonl(self.journal_path, _is_entry)
        except JournalLineError as e:
            raise CheckpointError(f"corrupt journal {self.journal_path} at line {e.line}: {e.text[:80]!r}") from None
        for entry in entries:
            self.journal[entry["id"]] = entry["value"]

    def get(self, event_id: str, default=None):
        return self.journal.get(event_id, default)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self.journal

    def record(self, event_id: str, value) -> None:
        """Append one finished event to the journal (flushed and fsynced before returning)."""
        line = json.dumps({"id": event_id, "value": value}, allow_nan=True) + "\n"
        try:
            if self._fh is None:
                self._fh = open(self.journal_path, "a")
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as e:  # a full disk, a folder made read-only: stop, nothing journaled is lost
            raise _stopped(self.journal_path, e) from None
        self.journal[event_id] = value

    def once(self, event_id: str, fn):
        """Run a side effect once per search: on a replay its journaled value is returned instead."""
        if event_id in self.journal:
            return self.journal[event_id]
        value = fn()
        self.record(event_id, value)
        return value

    def evaluation(self, task, run):
        """The result of `task`: replayed from the journal, else `run()` and journaled. A journaled
        result is stored with the genes it was trained for; one trained for other genes (the code or
        a setting outside the resume check changed) is refused instead of being reused."""
        eid = "eval/" + task.key
        if eid in self.journal:
            res = self.journal[eid]
            if not isinstance(res, dict) or not isinstance(res.get("key"), str):
                raise CheckpointError(f"{self.journal_path}: the entry {eid} is not an evaluation result "
                                      f"({str(res)[:60]!r}); the journal was edited or damaged: resume needs the "
                                      f"entry as it was written, or start again in a new --out")
            if "genes" in res and res["genes"] != task.genes:
                raise CheckpointError(f"{self.journal_path}: {eid} was trained for genes {res['genes']}, the "
                                      f"resumed search asks for {task.genes}; the search changed since it "
                                      f"was started: resume it with the same version, or use another --out")
            return res
        res = dict(run(), genes=task.genes)
        self.record(eid, res)
        return res

    def snapshot(self, state: dict) -> None:
        """Rewrite checkpoint.json atomically with the search's state (populations, archive, compute, ...).
        Its head (settings, MLflow run) is journaled too, so an unreadable snapshot can be rebuilt."""
        meta = {"search": self.search, "run_id": self.run_id, "tracking_uri": self.tracking_uri}
        if self.journal.get("meta") != meta:
            self.record("meta", meta)
        doc = {"format": FORMAT, "version": VERSION, "search": self.search, "run_id": self.run_id,
               "tracking_uri": self.tracking_uri, "n_events": len(self.journal), **state}
        try:
            atomic_write(self.path, json.dumps(doc, indent=1, allow_nan=True))
        except OSError as e:
            raise _stopped(self.path, e) from None

    def state_path(self, key: str) -> str:
        """The file of the training state a task saves (the one owner of state-file names)."""
        return str(self.states / f"{key.replace('/', '_')}.pt")

    def state_available(self, path: str) -> bool:
        return os.path.exists(path)

    def evaluated(self) -> bool:
        """Whether any evaluation was journaled (something computed that a resume must not lose)."""
        return any(k.startswith("eval/") for k in self.journal)

    def discard(self) -> None:
        """Remove the snapshot, the journal and the states of a search that computed nothing (it was
        refused at its start), so that the folder does not block the next search."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for p in (self.path, self.journal_path):
            p.unlink(missing_ok=True)
        try:
            self.states.rmdir()  # only when empty
        except OSError:
            pass

    def close(self) -> None:
        """Close the journal and release the folder's lock."""
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:  # a write that failed left bytes it cannot flush either: they were never journaled
                pass
            self._fh = None
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None


class JournalLineError(ValueError):
    """A journal line that is neither a whole entry nor a last line cut short."""

    def __init__(self, line: int, text: str):
        super().__init__(f"line {line}: {text[:80]!r}")
        self.line, self.text = line, text


def read_jsonl(path: Path, valid) -> list:
    """The entries of an append-only JSON-lines journal (evo.run's and evo.bench build's), each one
    accepted by `valid`. A last line cut short by a kill (no newline) is dropped from the file, and a
    whole last entry without its newline gets one, so the next append starts a line of its own. Any
    other bad line raises JournalLineError. A missing file has no entries."""
    if not path.exists():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines, out = text.splitlines(), []
    for n, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
            if not valid(entry):
                raise ValueError("not an entry")
        except ValueError:
            if n == len(lines) and not text.endswith("\n"):
                atomic_write(path, text[: text.rfind("\n") + 1])
                return out
            raise JournalLineError(n, line) from None
        out.append(entry)
    if text and not text.endswith("\n"):
        atomic_write(path, text + "\n")
    return out


def _is_entry(entry) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("id"), str) and "value" in entry


def lock_folder(folder: Path, lock_path: Path, what: str):
    """Take a folder's lock (an exclusive flock on `lock_path`, held until the returned file is
    closed), or fail at once naming the folder and the process that holds it."""
    try:
        fh = open(lock_path, "a+")
    except OSError as e:
        raise _unwritable(folder, e) from None
    if fcntl is not None:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            raise CheckpointError(
                f"{folder} is in use: another process{f' (pid {holder})' if holder.isdigit() else ''} "
                f"holds its lock {lock_path}; wait for that {what} to end (or stop it) before "
                f"running or resuming a {what} in this folder") from None
        except OSError as e:  # a filesystem without locks (some network mounts): go on unlocked
            print(f"warning: cannot lock {lock_path} ({e.strerror or e}); make sure no other "
                  f"process uses {folder}", file=sys.stderr)
    try:  # who holds it, for the error above
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
    except OSError:
        pass
    return fh


def _stopped(path: Path, e: OSError) -> CheckpointError:
    return CheckpointError(f"cannot write {path} ({e.strerror or e}); the search stopped and what it journaled "
                           f"is kept: free space or make the folder writable, then resume (--resume)")


def _unwritable(folder: Path, e: OSError) -> CheckpointError:
    return CheckpointError(f"cannot write to the output folder {folder}: {e.strerror or e}"
                           f"{f' ({e.filename})' if e.filename else ''}; choose a writable --out")


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
