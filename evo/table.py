"""Tabular benchmarks: a trained sample of a search space, searched by lookup instead of training.

A table is a directory of three files (docs/TABLES.md):

    archs.csv    arch_id, <one numeric column per gene>, n_params, cost_per_step[, more columns]
    curves.csv   curve_id,step,split,loss   (the evo.predict format; curve_id = arch_id)
    table.json   {"full_steps": int, "early_steps": int, "genes": [...], "cost_unit": str, ...}

`Table.space()` turns the gene columns into a search space on the unit cube whose decoding snaps
to the nearest row, and `Table.evaluate(task)` answers an evaluation by cutting that row's curves
at the task's step, so the engine and every peer run against a table unchanged.
"""
from __future__ import annotations

import csv
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from models.presets import ChoiceParam, FloatParam, GeneSpace

FORMAT, VERSION = "dimorph-table", 1
MAX_CHOICES = 12  # a gene with at most this many distinct values is a choice, else a float range
SPLITS = ("train", "val", "train_eval")


class TableError(ValueError):
    """A malformed table: the message names the file and, where it can, the line."""


def _num(text: str, where: str, what: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise TableError(f"{where}: {what} must be a number, got {text!r}") from None


def _csv(path: Path, required: Sequence[str]):
    """(header, rows with their line numbers) of a CSV file, with the required columns present."""
    if not path.is_file():
        raise TableError(f"{path}: file not found (a table needs archs.csv, curves.csv and table.json)")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise TableError(f"{path}:1: empty file")
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise TableError(f"{path}:1: missing column {missing[0]!r} (header: {','.join(header)})")
        rows = []
        for line, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) != len(header):
                raise TableError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
            rows.append((line, row))
    return header, rows


@dataclass(frozen=True)
class TableSpace(GeneSpace):
    """A table's gene space on the unit cube, duck-typed as a Preset for the engine and peers."""

    name: str
    full_steps: int
    early_steps: int
    space: tuple
    baseline: dict
    unit_rows: np.ndarray = field(repr=False, compare=False)  # (n_rows, n_genes) rows on the unit cube
    row_genes: tuple = field(repr=False, compare=False)        # each row's genes dict

    @property
    def early_frac(self) -> float:
        return self.early_steps / self.full_steps

    def nearest(self, u: Sequence[float]) -> int:
        """Index of the row nearest to u (Euclidean on the unit cube; ties: the first row)."""
        x = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
        if x.shape != (len(self.space),) or not np.isfinite(x).all():
            raise ValueError(f"genome must be {len(self.space)} numbers in [0, 1], got {list(u)!r}")
        return int(np.argmin(((self.unit_rows - x) ** 2).sum(axis=1)))

    def decode(self, u: Sequence[float]) -> dict:
        """Unit vector -> the genes of the nearest row (so equal rows give equal keys)."""
        return dict(self.row_genes[self.nearest(u)])



def _param(name: str, values: np.ndarray, log: bool | None):
    uniq = np.unique(values)
    if len(uniq) <= MAX_CHOICES:
        return ChoiceParam(name, tuple(_plain(v) for v in uniq))
    lo, hi = float(uniq[0]), float(uniq[-1])
    if log is None:
        log = lo > 0 and hi / lo >= 10
    return FloatParam(name, lo, hi, log=bool(log) and lo > 0)


def _plain(v: float):
    return int(v) if float(v).is_integer() else float(v)


def _unit(p, v: float) -> float:
    if isinstance(p, ChoiceParam):
        return p.encode(_plain(v))
    if p.high == p.low:
        return 0.5
    return min(1.0, max(0.0, p.encode(float(v))))


class Table:
    """A loaded table: per-row genes, costs and curves."""

    def __init__(self, directory: str | Path):
        d = Path(directory)
        if not d.is_dir():
            raise TableError(f"{d}: not a table directory")
        self.dir = d
        meta_path = d / "table.json"
        if not meta_path.is_file():
            raise TableError(f"{meta_path}: file not found (a table needs archs.csv, curves.csv and table.json)")
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as e:
            raise TableError(f"{meta_path}:{e.lineno}: not JSON ({e.msg})") from None
        for k, kind in (("full_steps", int), ("early_steps", int), ("genes", list), ("cost_unit", str)):
            if not isinstance(self.meta.get(k), kind) or isinstance(self.meta.get(k), bool):
                raise TableError(f"{meta_path}: {k!r} must be a {kind.__name__}, got {self.meta.get(k)!r}")
        self.full_steps, self.early_steps = self.meta["full_steps"], self.meta["early_steps"]
        if not 0 < self.early_steps < self.full_steps:
            raise TableError(f"{meta_path}: need 0 < early_steps < full_steps, got "
                             f"{self.early_steps} and {self.full_steps}")
        self.genes = [str(g) for g in self.meta["genes"]]
        if not self.genes:
            raise TableError(f"{meta_path}: 'genes' is empty")
        self._read_archs(d / "archs.csv")
        self._read_curves(d / "curves.csv")

    # -- reading ---------------------------------------------------------------------------------
    def _read_archs(self, path: Path) -> None:
        header, rows = _csv(path, ["arch_id", *self.genes, "n_params", "cost_per_step"])
        col = {h: i for i, h in enumerate(header)}
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        gene_vals, self.n_params, self.cost_per_step, self.extra = [], [], [], []
        for line, row in rows:
            where = f"{path}:{line}"
            aid = row[col["arch_id"]].strip()
            if not aid or aid in self.index:
                raise TableError(f"{where}: arch_id {aid!r} is empty or repeated")
            vals = [_num(row[col[g]], where, g) for g in self.genes]
            if not all(math.isfinite(v) for v in vals):
                raise TableError(f"{where}: gene values must be finite, got {vals}")
            cost = _num(row[col["cost_per_step"]], where, "cost_per_step")
            if not cost > 0 or not math.isfinite(cost):
                raise TableError(f"{where}: cost_per_step must be a positive number, got {cost}")
            self.index[aid] = len(self.ids)
            self.ids.append(aid)
            gene_vals.append(vals)
            self.n_params.append(_num(row[col["n_params"]], where, "n_params"))
            self.cost_per_step.append(cost)
            self.extra.append({h: row[i] for h, i in col.items()
                               if h not in ("arch_id", "n_params", "cost_per_step", *self.genes)})
        if len(self.ids) < 2:
            raise TableError(f"{path}: a table needs at least 2 architectures, got {len(self.ids)}")
        self.gene_values = np.asarray(gene_vals, dtype=float)

    def _read_curves(self, path: Path) -> None:
        header, rows = _csv(path, ["curve_id", "step", "split", "loss"])
        c = {h: header.index(h) for h in ("curve_id", "step", "split", "loss")}
        pts: dict[tuple[int, str], list] = {}
        for line, row in rows:
            where = f"{path}:{line}"
            aid = row[c["curve_id"]].strip()
            if aid not in self.index:
                raise TableError(f"{where}: curve_id {aid!r} is not an arch_id of archs.csv")
            split = row[c["split"]].strip()
            if split not in SPLITS:
                raise TableError(f"{where}: split must be one of {', '.join(SPLITS)}, got {split!r}")
            step = _num(row[c["step"]], where, "step")
            if not step >= 0 or step != int(step) or step > self.full_steps:
                raise TableError(f"{where}: step must be an integer in [0, full_steps={self.full_steps}], got {step}")
            loss = _num(row[c["loss"]], where, "loss")  # nan/inf allowed: a diverged point
            pts.setdefault((self.index[aid], split), []).append((int(step), loss))
        self.curves: list[dict[str, tuple[np.ndarray, np.ndarray]]] = [{} for _ in self.ids]
        for (i, split), p in pts.items():
            p.sort()
            steps = np.array([s for s, _ in p], dtype=int)
            if (np.diff(steps) == 0).any():
                raise TableError(f"{path}: curve {self.ids[i]!r} repeats step "
                                 f"{int(steps[1:][np.diff(steps) == 0][0])} in split {split!r}")
            self.curves[i][split] = (steps, np.array([v for _, v in p], dtype=float))
        for i, aid in enumerate(self.ids):
            for split in ("train", "val"):
                if split not in self.curves[i] or len(self.curves[i][split][0]) < 2:
                    raise TableError(f"{path}: architecture {aid!r} needs at least 2 {split!r} points")
        self.targets = np.array([self._best(i, self.full_steps) for i in range(len(self.ids))])
        base = self.meta.get("baseline")
        if base is not None and str(base) not in self.index:
            raise TableError(f"{self.dir / 'table.json'}: baseline {base!r} is not an arch_id of archs.csv "
                             f"(its first is {self.ids[0]!r})")

    # -- the search space ------------------------------------------------------------------------
    def space(self) -> TableSpace:
        logs = self.meta.get("log_genes")
        params = tuple(_param(g, self.gene_values[:, j], (g in logs) if logs is not None else None)
                       for j, g in enumerate(self.genes))
        unit = np.array([[_unit(p, v) for p, v in zip(params, row)] for row in self.gene_values])
        row_genes = tuple({g: _plain(v) for g, v in zip(self.genes, row)} for row in self.gene_values)
        base = self.meta.get("baseline")
        b = self.index[str(base)] if base is not None else 0
        return TableSpace(name=f"table:{self.meta.get('name', self.dir.name)}", full_steps=self.full_steps,
                          early_steps=self.early_steps, space=params, baseline=dict(row_genes[b]),
                          unit_rows=unit, row_genes=row_genes)

    def row_of(self, genes: dict) -> int:
        """The row whose genes equal `genes` (decoded genomes always match one)."""
        key = tuple(float(genes[g]) for g in self.genes)
        hits = np.flatnonzero((self.gene_values == np.array(key)).all(axis=1))
        if not len(hits):
            raise ValueError(f"no row of {self.dir} has genes {genes}")
        return int(hits[0])

    # -- lookup ------------------------------------------------------------------------------------
    def _upto(self, i: int, split: str, steps: int):
        if split not in self.curves[i]:
            return np.array([], dtype=int), np.array([])
        s, v = self.curves[i][split]
        keep = s <= steps
        return s[keep], v[keep]

    def _best(self, i: int, steps: int) -> float:
        _, v = self._upto(i, "val", steps)
        v = v[np.isfinite(v)]
        return float(v.min()) if len(v) else math.inf

    def last_step(self, i: int) -> int:
        """The last step the row's training reached (below full_steps: it diverged there)."""
        return int(max(self.curves[i]["train"][0][-1], self.curves[i]["val"][0][-1]))

    def result(self, i: int, steps: int) -> dict:
        """What training row i up to `steps` would have returned (the TrainResult.to_dict shape)."""
        reached = min(steps, self.last_step(i))
        ts, tv = self._upto(i, "train", reached)
        es, ev = self._upto(i, "val", reached)
        _, te = self._upto(i, "train_eval", reached)
        diverged = reached < steps or not (len(tv) and math.isfinite(tv[-1]))
        finite = np.isfinite(ev)
        j = int(np.argmin(np.where(finite, ev, np.inf))) if finite.any() else 0
        sps = _float(self.extra[i].get("seconds_per_step"))
        seconds = sps * reached if sps is not None else 0.0

        def clean(a):
            return [float(x) if math.isfinite(x) else None for x in a]
        return {
            "steps": int(reached), "train_steps": [int(s) for s in ts], "train_losses": clean(tv),
            "eval_steps": [int(s) for s in es], "val_losses": clean(ev),
            "train_eval_losses": clean(te) if len(te) == len(ev) else clean(np.interp(es, ts, tv)),
            "best_val_loss": float(ev[j]) if finite.any() else None,
            "best_val_step": int(es[j]) if len(es) else 0,
            "final_val_loss": None if diverged else float(ev[-1]),
            "final_train_loss": None if diverged else (float(te[-1]) if len(te) else float(tv[-1])),
            "diverged": bool(diverged),
            "diverge_reason": f"the table's curve ends at step {reached}" if diverged else None,
            "wall_time": seconds, "flops": self.cost_per_step[i] * reached, "tokens": 0,
            "n_params": int(self.n_params[i]), "tokens_per_s": _float(self.extra[i].get("tokens_per_s")) or 0.0,
            "arch_id": self.ids[i], "error": None,
        }

    def evaluate(self, task) -> dict:
        """An EvalTask answered by lookup: the row with the task's genes, cut at task.steps."""
        out = self.result(self.row_of(task.genes), task.steps)
        out.update(key=task.key, phase=task.phase, eval_seconds=out["wall_time"])
        return out

    @property
    def best_target(self) -> float:
        """The table's best target (best validation loss over the full budget): regret's zero."""
        return float(np.min(self.targets))

    def mean_full_cost(self) -> float:
        return float(np.mean(self.cost_per_step) * self.full_steps)


def _float(text) -> float | None:
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


@functools.lru_cache(maxsize=4)
def load_table(directory: str) -> Table:
    """A table, parsed once per process (lookups are then pure)."""
    return Table(directory)


class TableEvaluator:
    """A picklable evaluation function for the executors: `fn(task) -> result` by lookup."""

    def __init__(self, directory: str):
        self.directory = str(directory)

    def __call__(self, task) -> dict:
        return load_table(self.directory).evaluate(task)
