"""Reading samples from files: long-format tables (one row per sample) into :class:`Samples`.

Formats: JSON Lines (``.jsonl``), CSV (``.csv``), Parquet (``.parquet``, needs ``pyarrow``) and
NumPy (``.npz``, one array per column). Text files may be compressed (``.gz``, ``.bz2``, ``.xz``;
``.zst`` with the ``zstandard`` package) and may start with a UTF-8 byte-order mark (Excel's "CSV
UTF-8"). Every malformed input raises :class:`DataError` naming the file, the line (row) and the
column: a repeated column name, a value no float can hold, a prompt id that is not a string or a
number, or ids that differ only in type (``0`` and ``"0"``).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io as _io
import json
import lzma
import math
import sys
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
            raise DataError(f"{self.path}: no column {name!r}{hint}; {_columns_hint(name, self.columns)}")
        col = self.columns[name]
        if not numeric:
            return col
        if col.dtype.kind in "fiub":
            out = col.astype(np.float64)
        elif (fast := _floats_of_text(col)) is not None:
            out = fast
        else:
            out = np.empty(len(col))
            for i, v in enumerate(col):
                try:
                    out[i] = _to_float(v)
                except (TypeError, ValueError):
                    raise DataError(f"{self.where(i)}: column {name!r} has a non-numeric value {_short(v)}") from None
                except OverflowError:
                    raise DataError(f"{self.where(i)}: column {name!r} has a number too large for a float "
                                    f"({_short(v)})") from None
        bad = ~np.isfinite(out)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            more = f" ({int(bad.sum()) - 1} more such rows)" if bad.sum() > 1 else ""
            raise DataError(f"{self.where(i)}: column {name!r} is {_short(col[i])}, not a finite number{more}")
        return out

    def keys(self, name: str, *, option: str | None = None) -> list:
        """A column of identifiers (prompt ids, dedupe keys), each a string or a number.

        Numbers that are whole (``3``, ``3.0``) become ``int``. Raises a DataError for a list,
        object, empty or non-finite cell, and for two ids that differ only in type (``0`` and
        ``"0"``: in a file they are meant as the same prompt, or not; say which by writing them
        one way).
        """
        col = self.column(name, numeric=False, option=option)
        if col.dtype.kind in "iu":  # a numeric column (vectorised readers): whole numbers, one type
            return col.tolist()
        if col.dtype.kind == "f" and np.isfinite(col).all() and (col == np.round(col)).all():
            return col.astype(np.int64).tolist()
        out, seen = [], {}
        for i, v in enumerate(col):
            k = _key(v)
            if k is None or (isinstance(k, float) and not math.isfinite(k)) or (isinstance(k, str) and not k.strip()):
                raise DataError(f"{self.where(i)}: column {name!r} is empty")
            if isinstance(k, bool) or not isinstance(k, (str, int, float)):
                raise DataError(f"{self.where(i)}: column {name!r} is {_short(v)}; an id must be a string or a number")
            first = seen.setdefault(str(k), (i, k))
            if isinstance(k, str) != isinstance(first[1], str):
                j, other = first
                raise DataError(
                    f"{self.where(i)}: column {name!r} is {k!r} (a {type(k).__name__}) but "
                    f"{self.kind} {int(self.lines[j])} has {other!r} (a {type(other).__name__}): the same id written "
                    f"two ways would be two different prompts; write the ids one way (all strings or all numbers)"
                )
            out.append(k)
        return out


def _floats_of_text(col: np.ndarray) -> np.ndarray | None:
    """A column of number strings (CSV cells) as float64 in one NumPy pass; None when some cell is
    not a string or not a number (the cell-by-cell conversion then names it)."""
    if len(col) < 1024 or not all(isinstance(v, str) for v in col[:64]):
        return None
    try:
        text = col.astype(str)
        if np.any(np.char.str_len(np.char.strip(text)) == 0):
            return None
        return text.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        return None


def _columns_hint(name: str, columns) -> str:
    """The columns a name was looked for in: quoted when a name hides spaces or invisible characters."""
    names = sorted(map(str, columns))
    plain = all(n == n.strip() and n.isprintable() and n.isascii() for n in names)
    text = f"the columns are {', '.join(names if plain else map(repr, names))}"

    def norm(n: str) -> str:
        return "".join(ch for ch in n if ch.isprintable() and not ch.isspace() and ch != "\ufeff").casefold()

    near = [n for n in names if norm(n) == norm(name)]
    if near:
        text += f" ({near[0]!r} differs from {name!r} only in spaces, case or invisible characters)"
    return text


def _short(v, limit: int = 60) -> str:
    """``repr`` of a cell, shortened for a one-line message."""
    text = repr(v.tolist() if isinstance(v, np.ndarray) else v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    suffix, compression = _format(path)
    readers = {".jsonl": _read_jsonl, ".json": _read_jsonl, ".ndjson": _read_jsonl, ".csv": _read_csv,
               ".parquet": _read_parquet, ".npz": _read_npz}
    if suffix not in readers or (compression and suffix not in TEXT_FORMATS):
        raise DataError(f"{path}: unknown format {''.join(path.suffixes[-2:])!r}; use .jsonl, .csv, .parquet or .npz "
                        f"(.jsonl and .csv may end in {', '.join(COMPRESSIONS)})")
    try:
        table = readers[suffix](path)
    except DataError:
        raise
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text file ({e.reason})") from None
    except (OSError, EOFError, lzma.LZMAError) as e:  # also a corrupt .gz, .bz2 or .xz
        raise DataError(f"{path}: cannot read ({e})") from None
    if len(table) == 0:
        raise DataError(f"{path}: no rows")
    return table


#: Compressed text files read by suffix (``.zst`` needs the ``zstandard`` package).
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
#: Formats that may be compressed.
TEXT_FORMATS = (".jsonl", ".json", ".ndjson", ".csv")


def _format(path: Path) -> tuple[str, str | None]:
    """``(format suffix, compression suffix or None)`` of a file name, lower case."""
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        return (suffixes[-2] if len(suffixes) > 1 else ""), suffixes[-1]
    return (suffixes[-1] if suffixes else ""), None


def open_text(path: Path):
    """A text stream of a (possibly compressed) file, UTF-8 with or without a byte-order mark."""
    compression = _format(Path(path))[1]
    if compression == ".zst":
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{path}: reading .zst needs the zstandard package (pip install zstandard)") from None
        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
        return _io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, None: open}[compression]
    return opener(path, "rt", encoding="utf-8-sig", newline="")


def _no_repeated_keys(path: Path, n: int):
    def hook(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise DataError(f"{path}:line {n}: the key {k!r} appears twice in one object; which value is "
                                f"meant is ambiguous: keep one")
            seen.add(k)
        return dict(pairs)
    return hook


def jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of each non-blank line of a JSONL file, or a DataError naming the line.

    Refuses an object with a repeated key, and an integer no float can hold.
    """
    with open_text(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line, object_pairs_hook=_no_repeated_keys(path, n), parse_int=_parse_int)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
            except OverflowError as e:
                raise DataError(f"{path}:line {n}: {e}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:line {n}: expected a JSON object, got {type(obj).__name__}")
            yield n, obj


def _parse_int(text: str) -> int:
    """A JSON integer; one beyond float64's range cannot be a reward, a count or an id we can compare."""
    try:
        v = int(text)
        float(v)
    except (OverflowError, ValueError):  # ValueError: beyond Python's 4300-digit limit
        digits = len(text.lstrip("-"))
        raise OverflowError(f"a {digits}-digit integer ({text[:12]}...) is too large for a float") from None
    return v


def csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of a CSV file: the header first, then each non-blank row.

    Raises a DataError for an empty file or a row whose field count differs from the header's.
    """
    with open_text(path) as f, _csv_field_limit():
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: empty file") from None
        except csv.Error as e:
            raise DataError(f"{path}:line {reader.line_num}: not valid CSV ({e})") from None
        repeated = sorted({h for h in header if header.count(h) > 1})
        if repeated:
            raise DataError(f"{path}:line {reader.line_num}: the header repeats the column name(s) "
                            f"{', '.join(map(repr, repeated))}; which one is meant is ambiguous: rename or drop one")
        yield reader.line_num, header
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise DataError(f"{path}:line {reader.line_num + 1}: not valid CSV ({e})") from None
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:line {reader.line_num}: {len(row)} fields, the header has {len(header)}")
            yield reader.line_num, row


class _csv_field_limit:
    """Lifts the csv module's 131,072-character field limit (a saved response text can be longer)."""

    def __enter__(self):
        self.old = csv.field_size_limit()
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

    def __exit__(self, *exc):
        csv.field_size_limit(self.old)


#: Uncompressed JSON Lines files from this size on (bytes) are read by pyarrow's vectorised reader
#: when pyarrow is installed (about 10x faster and 5x less memory at 1M rows; benchmarks/bench_io.py);
#: a file it cannot read exactly as the line-by-line reader would is read line by line.
ARROW_MIN_BYTES = 4 * 2**20
_ARROW_TYPES = ("int64", "double", "bool", "string", "large_string")


def _read_jsonl_arrow(path: Path) -> Table | None:
    """The file by ``pyarrow.json``, or None where the result could differ from :func:`_read_jsonl`'s.

    Accepted only when every line holds one object, every object every column, and every column
    is a number, a boolean or a string (no lists, objects, nulls, or strings pyarrow would read as
    dates); anything else (blank lines, a repeated key, a byte-order mark, bad JSON) goes to the
    line-by-line reader, whose errors name the line.
    """
    if _format(path)[1] is not None or path.stat().st_size < ARROW_MIN_BYTES:
        return None
    try:
        import pyarrow as pa
        import pyarrow.json as pj
    except ImportError:
        return None
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        return None
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    try:
        t = pj.read_json(pa.BufferReader(data), parse_options=pj.ParseOptions(newlines_in_values=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    del data
    if t.num_rows != lines or any(str(f.type) not in _ARROW_TYPES or t.column(f.name).null_count
                                  for f in t.schema):
        return None
    cols = {}
    for name in t.column_names:
        col = t.column(name)
        cols[name] = col.to_numpy() if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) else (
            np.asarray(col.to_numpy(zero_copy_only=False), dtype=object) if not pa.types.is_boolean(col.type) else
            np.asarray(col.to_numpy(zero_copy_only=False), dtype=bool))
    return Table(path, cols, np.arange(1, t.num_rows + 1))


def _read_jsonl(path: Path) -> Table:
    fast = _read_jsonl_arrow(path)
    if fast is not None:
        return fast
    lines, rows, names = [], [], {}
    for n, obj in jsonl_records(path):
        lines.append(n)
        rows.append(obj)
        names.update(dict.fromkeys(obj))
    cols = {k: _object_column([obj.get(k) for obj in rows]) for k in names}
    return Table(path, cols, np.asarray(lines))


def _object_column(values: list) -> np.ndarray:
    """A 1-D object array of the cells as they are (``np.array`` would turn equal-length lists into 2-D)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


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
    repeated = sorted({h for h in t.column_names if t.column_names.count(h) > 1})
    if repeated:
        raise DataError(f"{path}: the column name(s) {', '.join(map(repr, repeated))} appear twice; which one is "
                        f"meant is ambiguous: rename or drop one")
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
      lines: per prompt, ``[samples]`` the file's line (or row) of each of its samples, in the
        order of the :class:`Samples` row (for messages that name a sample).
    """

    samples: Samples
    prompt_ids: list[Any]
    source: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    lines: list[np.ndarray] = field(default_factory=list)
    kind: str = "line"

    def label(self, prompt: int, sample: int | None = None) -> str:
        """How messages name a prompt (row ``prompt`` of the samples): its id and where it is in the file."""
        text = f"prompt {self.prompt_ids[prompt]!r}"
        if not self.lines:
            return text
        rows = self.lines[prompt]
        if sample is not None and 0 <= sample < len(rows):
            return f"{text} ({self.source['file']}:{self.kind} {int(rows[sample])})"
        return f"{text} (first at {self.source['file']}:{self.kind} {int(rows[0])})"


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
    cols = {k: _object_column(v) for k, v in out.items()}
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
    pids = table.keys(prompt, option="--prompt-col")
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
    keys = table.keys(dedupe, option="--dedupe") if dedupe else None

    order: dict[Any, list[int]] = {}
    for i, p in enumerate(pids):
        order.setdefault(p, []).append(i)
    notes: list[str] = []
    per_prompt: dict[str, list[np.ndarray]] = {name: [] for name in values}
    per_counts: list[np.ndarray] = []
    per_lines: list[np.ndarray] = []
    conflicts, merged = [], 0
    for pid, idx in order.items():
        idx = np.asarray(idx)
        c = counts[idx] if counts is not None else np.ones(len(idx))
        if keys is None:
            for name in values:
                per_prompt[name].append(values[name][idx])
            per_counts.append(c)
            per_lines.append(table.lines[idx])
            continue
        groups: dict[tuple, int] = {}
        rows_out: list[int] = []
        cnt_out: list[float] = []
        seen_vals: dict[Any, set] = {}
        for j, i in enumerate(idx):
            vals = tuple(float(values[name][i]) for name in values)
            k = (keys[i], vals)
            seen_vals.setdefault(keys[i], set()).add(vals)
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
        per_lines.append(table.lines[np.asarray(rows_out)])
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
            raise DataError(f"{table.where(order[p][0])}: prompt {p!r} has no sample with a positive count")
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
    return Loaded(samples, list(order), source, notes, per_lines, table.kind)


#: The CLI's option names (``--reward-col`` -> ``reward_col``) for the column keywords of :func:`load`.
CLI_NAMES = {
    "prompt_col": "prompt", "reward_col": "reward", "score_col": "score", "log_weight_col": "log_weight",
    "count_col": "count", "base_logprob_col": "base_logprob", "sampler_logprob_col": "sampler_logprob",
}


def column_keywords(columns: dict) -> dict:
    """Column keywords with the CLI's names (``reward_col=``) turned into the short ones (``reward=``).

    Raises:
      TypeError: a column given under both names, or a keyword that names no column.
    """
    out = {}
    for key, value in columns.items():
        name = CLI_NAMES.get(key, key)
        if name not in CLI_NAMES.values() and name != "dedupe":
            known = ", ".join(sorted(set(CLI_NAMES.values()) | {"dedupe"} | set(CLI_NAMES)))
            raise TypeError(f"unknown column keyword {key!r}; the keywords are {known}")
        if name in out:
            raise TypeError(f"column {name!r} given twice (as {name!r} and {name + '_col'!r}); give one")
        out[name] = value
    return out


def load(path, **columns) -> Loaded:
    """Reads a long-format file into :class:`Samples` (see :func:`samples_from_table`).

    The column keywords are :func:`samples_from_table`'s (``prompt=``, ``reward=``, ``score=``,
    ``log_weight=``, ``count=``, ``dedupe=``, ``base_logprob=``, ``sampler_logprob=``), or the same
    under the CLI's option names (``prompt_col=``, ``reward_col=``, ..., as ``--reward-col``):
    ``load(path, reward_col="rm_logit")`` is ``load(path, reward="rm_logit")``.

    Raises:
      TypeError: an unknown keyword, or one column under both names.
      DataError: see :func:`samples_from_table`.
    """
    return samples_from_table(read_table(path), **column_keywords(columns))
