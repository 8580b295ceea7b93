"""Reading samples from files: long-format tables (one row per sample) into :class:`Samples`.

Formats: JSON Lines (``.jsonl``), CSV (``.csv``), Parquet (``.parquet``, needs ``pyarrow``) and
NumPy (``.npz``, one array per column). Every malformed input raises :class:`DataError` naming the
file, the line (row) and the column.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .samples import Samples


class DataError(ValueError):
    """A problem with an input file: the message names the file, line and column."""


@dataclass
class Table:
    """Columns of a file, with where each row came from (for error messages).

    Attributes:
      path: the file.
      columns: column name -> 1-D array (object dtype until parsed).
      lines: ``[rows]`` the 1-based line (or row) number of each row in the file.
    """

    path: Path
    columns: dict[str, np.ndarray]
    lines: np.ndarray
    kind: str = "line"

    def __len__(self) -> int:
        return len(self.lines)

    def where(self, row: int) -> str:
        return f"{self.path}:{self.kind} {int(self.lines[row])}"

    def column(self, name: str, *, numeric: bool = True, option: str | None = None) -> np.ndarray:
        """A column, as float64 when ``numeric`` (with an error naming the first bad cell)."""
        if name not in self.columns:
            hint = f" (set it with {option})" if option else ""
            raise DataError(
                f"{self.path}: no column {name!r}{hint}; the columns are {', '.join(sorted(self.columns))}"
            )
        col = self.columns[name]
        if not numeric:
            return col
        if col.dtype.kind in "fiub":
            out = col.astype(np.float64)
        else:
            out = np.empty(len(col))
            for i, v in enumerate(col):
                try:
                    out[i] = _to_float(v)
                except (TypeError, ValueError):
                    raise DataError(f"{self.where(i)}: column {name!r} has a non-numeric value {v!r}") from None
        bad = ~np.isfinite(out)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            more = f" ({int(bad.sum()) - 1} more such rows)" if bad.sum() > 1 else ""
            raise DataError(f"{self.where(i)}: column {name!r} is {col[i]!r}, not a finite number{more}")
        return out


def _to_float(v) -> float:
    if v is None or (isinstance(v, str) and v.strip() == ""):
        raise ValueError("empty")
    if isinstance(v, bool):
        return float(v)
    return float(v)


def read_table(path) -> Table:
    """Reads a JSONL, CSV, Parquet or NPZ file into a :class:`Table`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a file")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    readers = {".jsonl": _read_jsonl, ".json": _read_jsonl, ".ndjson": _read_jsonl, ".csv": _read_csv,
               ".parquet": _read_parquet, ".npz": _read_npz}
    if suffix.lower() not in readers:
        raise DataError(f"{path}: unknown format {suffix!r}; use .jsonl, .csv, .parquet or .npz")
    try:
        table = readers[suffix.lower()](path)
    except DataError:
        raise
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text file ({e.reason})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if len(table) == 0:
        raise DataError(f"{path}: no rows")
    return table


def jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of each non-blank line of a JSONL file, or a DataError naming the line."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:line {n}: expected a JSON object, got {type(obj).__name__}")
            yield n, obj


def csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of a CSV file: the header first, then each non-blank row.

    Raises a DataError for an empty file or a row whose field count differs from the header's.
    """
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: empty file") from None
        yield reader.line_num, header
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:line {reader.line_num}: {len(row)} fields, the header has {len(header)}")
            yield reader.line_num, row


def _read_jsonl(path: Path) -> Table:
    lines, rows, names = [], [], {}
    for n, obj in jsonl_records(path):
        lines.append(n)
        rows.append(obj)
        names.update(dict.fromkeys(obj))
    cols = {k: np.array([obj.get(k) for obj in rows], dtype=object) for k in names}
    return Table(path, cols, np.asarray(lines))


def _read_csv(path: Path) -> Table:
    records = csv_records(path)
    _, header = next(records)
    lines, rows = [], []
    for n, row in records:
        lines.append(n)
        rows.append(row)
    cols = {name: np.array([r[i] for r in rows], dtype=object) for i, name in enumerate(header)}
    return Table(path, cols, np.asarray(lines))


def _read_parquet(path: Path) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'jaxlimits[parquet]')") from None
    try:
        t = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    cols = {name: np.asarray(t.column(name).to_numpy(zero_copy_only=False)) for name in t.column_names}
    return Table(path, cols, np.arange(1, t.num_rows + 1), kind="row")


def _read_npz(path: Path) -> Table:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except Exception as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if any(a.ndim == 2 for a in arrays.values()):  # wide: [prompts, samples] arrays
        shapes = {k: a.shape for k, a in arrays.items() if a.ndim == 2}
        if len(set(shapes.values())) > 1:
            raise DataError(f"{path}: 2-D arrays of different shapes {shapes}")
        num_p = next(iter(shapes.values()))[0]
        cols = {}
        for k, a in arrays.items():
            if a.ndim == 2:
                cols[k] = np.empty(num_p, dtype=object)
                cols[k][:] = list(a)
            elif a.ndim == 1 and len(a) == num_p:
                cols[k] = a.astype(object)
            else:
                raise DataError(f"{path}: array {k!r} of shape {a.shape} fits neither [prompts] nor [prompts, samples]")
        if "prompt_id" not in cols:
            cols["prompt_id"] = np.arange(num_p).astype(object)
        return Table(path, cols, np.arange(1, num_p + 1), kind="row")
    cols = {k: a.reshape(-1) for k, a in arrays.items()}
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"{path}: arrays of different lengths {lengths}; a long table needs one length")
    n = next(iter(lengths.values()), 0)
    return Table(path, cols, np.arange(1, n + 1), kind="row")


@dataclass
class Loaded:
    """Samples read from a table, with what was done to them.

    Attributes:
      samples: the :class:`Samples` ``[prompts, samples]``.
      prompt_ids: ``[prompts]`` the prompt identifiers, in file order of first appearance.
      source: a description of the input (file, columns, rows).
      notes: what the loader did that the user should know (deduplication, conflicts).
    """

    samples: Samples
    prompt_ids: list[Any]
    source: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _is_list_cell(v) -> bool:
    if isinstance(v, (list, tuple, np.ndarray)):
        return True
    return isinstance(v, str) and v.strip().startswith("[")


def _is_wide(table: Table, reward: str) -> bool:
    col = table.columns.get(reward)
    return col is not None and len(col) > 0 and col.dtype == object and _is_list_cell(col[0])


def _explode_wide(table: Table, prompt: str, names: list[str]) -> Table:
    """One row per prompt with list cells -> one row per sample (same line numbers for errors)."""
    for name in names + [prompt]:
        table.column(name, numeric=False, option=None)  # raises a clear error if missing
    out: dict[str, list] = {name: [] for name in [prompt] + names}
    lines: list[int] = []
    for i in range(len(table)):
        lists = {}
        for name in names:
            cell = table.columns[name][i]
            if isinstance(cell, str):
                try:
                    cell = json.loads(cell)
                except json.JSONDecodeError:
                    raise DataError(f"{table.where(i)}: column {name!r} is not a list: {cell[:40]!r}") from None
            if not isinstance(cell, (list, tuple, np.ndarray)):
                raise DataError(f"{table.where(i)}: column {name!r} should hold a list (wide format), got {cell!r}")
            lists[name] = list(cell)
        lengths = {len(v) for v in lists.values()}
        if len(lengths) > 1:
            sizes = ", ".join(f"{k}: {len(v)}" for k, v in lists.items())
            raise DataError(f"{table.where(i)}: the lists of a prompt differ in length ({sizes})")
        n = lengths.pop()
        if n == 0:
            raise DataError(f"{table.where(i)}: prompt {table.columns[prompt][i]!r} has an empty list of samples")
        out[prompt].extend([table.columns[prompt][i]] * n)
        for name in names:
            out[name].extend(lists[name])
        lines.extend([table.lines[i]] * n)
    cols = {k: np.array(v, dtype=object) for k, v in out.items()}
    return Table(table.path, cols, np.asarray(lines), kind=table.kind)


def _key(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return int(v)
    return v


def samples_from_table(
    table: Table,
    *,
    prompt: str = "prompt_id",
    reward: str = "reward",
    score: str | None = None,
    log_weight: str | None = None,
    count: str | None = None,
    dedupe: str | None = None,
    base_logprob: str | None = None,
    sampler_logprob: str | None = None,
) -> Loaded:
    """Groups a table by prompt into :class:`Samples`.

    Long format: one row per sample. Wide format (detected when the reward column holds lists):
    one row per prompt, each named column a list with one entry per sample.

    Args:
      table: the rows.
      prompt, reward: column names of the prompt id and the reward ``r``.
      score: optional column of the score ``s`` the gain is measured with.
      log_weight: optional column of importance log-weights (e.g. ``log pi0 - log q``).
      count: optional column of multiplicities.
      dedupe: optional column identifying identical responses (e.g. a hash); rows of a prompt with
        the same key and the same values are merged into one row with a count. Rows with the
        same key but different values are kept apart (and reported in ``notes``).
      base_logprob, sampler_logprob: optional columns of each response's sequence log-probability
        under the base model and under the sampler that drew it (temperature, top-p); their
        difference is the importance log-weight ``log pi0 - log q`` (MATH.md §1).

    Raises:
      DataError: a missing column, a non-numeric or non-finite value (naming file, line, column).
    """
    if (base_logprob is None) != (sampler_logprob is None):
        raise DataError("the log-probability correction needs both --base-logprob-col and --sampler-logprob-col")
    if base_logprob is not None and log_weight is not None:
        raise DataError("give either a log-weight column or the two log-probability columns, not both")
    if _is_wide(table, reward):
        table = _explode_wide(table, prompt, [c for c in (reward, score, log_weight, count, dedupe,
                                                           base_logprob, sampler_logprob) if c])
    pids = table.column(prompt, numeric=False, option="--prompt-col")
    values = {"reward": table.column(reward, option="--reward-col")}
    if score is not None:
        values["score"] = table.column(score, option="--score-col")
    if log_weight is not None:
        values["log_weight"] = table.column(log_weight, option="--log-weight-col")
    if base_logprob is not None:
        values["log_weight"] = table.column(base_logprob, option="--base-logprob-col") - table.column(
            sampler_logprob, option="--sampler-logprob-col")
    counts = None
    if count is not None:
        counts = table.column(count, option="--count-col")
        bad = (counts < 0) | (counts != np.round(counts))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{table.where(i)}: column {count!r} is {float(counts[i])}, not a whole number >= 0")
    for i, p in enumerate(pids):
        if p is None or (isinstance(p, float) and not math.isfinite(p)) or (isinstance(p, str) and not p.strip()):
            raise DataError(f"{table.where(i)}: column {prompt!r} is empty")
    keys = table.column(dedupe, numeric=False, option="--dedupe") if dedupe else None

    order: dict[Any, list[int]] = {}
    for i, p in enumerate(pids):
        order.setdefault(_key(p), []).append(i)
    notes: list[str] = []
    per_prompt: dict[str, list[np.ndarray]] = {name: [] for name in values}
    per_counts: list[np.ndarray] = []
    conflicts, merged = [], 0
    for pid, idx in order.items():
        idx = np.asarray(idx)
        c = counts[idx] if counts is not None else np.ones(len(idx))
        if keys is None:
            for name in values:
                per_prompt[name].append(values[name][idx])
            per_counts.append(c)
            continue
        groups: dict[tuple, int] = {}
        rows_out: list[int] = []
        cnt_out: list[float] = []
        seen_vals: dict[Any, set] = {}
        for j, i in enumerate(idx):
            vals = tuple(float(values[name][i]) for name in values)
            k = (_key(keys[i]), vals)
            seen_vals.setdefault(_key(keys[i]), set()).add(vals)
            if k in groups:
                cnt_out[groups[k]] += c[j]
                merged += 1
            else:
                groups[k] = len(rows_out)
                rows_out.append(i)
                cnt_out.append(c[j])
        for key, vals in seen_vals.items():
            if len(vals) > 1:
                conflicts.append((pid, key, sorted(vals)))
        for name in values:
            per_prompt[name].append(values[name][np.asarray(rows_out)])
        per_counts.append(np.asarray(cnt_out))
    if keys is not None:
        notes.append(f"deduplicated by {dedupe!r}: {merged} rows merged into counts")
        if conflicts:
            ex = "; ".join(f"prompt {p!r} key {k!r}: {v}" for p, k, v in conflicts[:3])
            notes.append(
                f"{len(conflicts)} (prompt, {dedupe}) groups carry different values for the same key; "
                f"each distinct value was kept as its own row (nothing averaged or dropped). e.g. {ex}"
            )
    use_counts = counts is not None or keys is not None
    for p, c in zip(order, per_counts):
        if c.sum() <= 0:
            raise DataError(f"{table.path}: prompt {p!r} has no sample with a positive count")
    samples = Samples.from_ragged(
        per_prompt["reward"],
        scores=per_prompt.get("score"),
        log_weights=per_prompt.get("log_weight"),
        counts=per_counts if use_counts else None,
    )
    source = {
        "file": str(table.path),
        "rows": len(table),
        "prompts": len(order),
        "columns": {k: v for k, v in dict(prompt=prompt, reward=reward, score=score, log_weight=log_weight,
                                          count=count, dedupe=dedupe, base_logprob=base_logprob,
                                          sampler_logprob=sampler_logprob).items() if v is not None},
    }
    return Loaded(samples, list(order), source, notes)


def load(path, **columns) -> Loaded:
    """Reads a long-format file into :class:`Samples` (see :func:`samples_from_table`)."""
    return samples_from_table(read_table(path), **columns)
