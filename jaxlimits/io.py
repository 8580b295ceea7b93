"""Reading samples from files: long-format tables (one row per sample) into :class:`Samples`.

Formats: JSON Lines (``.jsonl``), CSV (``.csv``), Parquet (``.parquet``, needs ``pyarrow``) and
NumPy (``.npz``, one array per column). Text files may be compressed (``.gz``, ``.bz2``, ``.xz``;
``.zst`` with the ``zstandard`` package) and may start with a UTF-8 byte-order mark (Excel's "CSV
UTF-8"). Every malformed input raises :class:`DataError` naming the file, the line (row) and the
column: a repeated column name, a value no float can hold, a prompt id that is not a string or a
number, or ids that differ only in type (``0`` and ``"0"``).

Large files (uncompressed JSON Lines and CSV from :data:`ARROW_MIN_BYTES` on, and Parquet) are
read by pyarrow, a block of lines at a time, keeping only the columns :func:`load` needs; rows
are grouped by prompt with array operations (benchmarks/README.md, "Loading 1,000,000 rows").
A file they cannot read exactly as the line-by-line readers would is read line by line.

:func:`iter_chunks` reads files a chunk of rows at a time, with the same readers (for
:mod:`jaxlimits.streaming`'s out-of-core sweeps and ``--stream``).
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
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .samples import Samples


class DataError(ValueError):
    """A problem with an input file: the message names the file, line and column."""


class Columns(Mapping):
    """Column name -> 1-D NumPy array, where a text column read by pyarrow stays an Arrow array.

    ``columns[name]`` is always NumPy (an Arrow text column becomes an object array of ``str`` on
    first access, and stays so); :meth:`raw` gives the column as stored, for the vectorised paths
    of :class:`Table` (one Python object per row is what made 1M-row files cost 20x their size).
    """

    def __init__(self, data=()):
        self._data = dict(data)

    def __getitem__(self, name: str) -> np.ndarray:
        col = self._data[name]
        if _is_arrow(col):
            col = self._data[name] = np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
        return col

    def raw(self, name: str):
        """The column as stored: a NumPy array, or a ``pyarrow`` (chunked) array of strings."""
        return self._data[name]

    def __contains__(self, name) -> bool:  # without turning the column into NumPy (Mapping's would)
        return name in self._data

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Columns({', '.join(map(repr, self._data))})"


def _is_arrow(col) -> bool:
    return not isinstance(col, np.ndarray) and type(col).__module__.startswith("pyarrow")


def _is_dictionary(col) -> bool:
    import pyarrow as pa

    return pa.types.is_dictionary(col.type)


@dataclass
class Table:
    """Columns of a file, with where each row came from (for error messages).

    Attributes:
      path: the file.
      columns: column name -> 1-D array (object dtype until parsed); a :class:`Columns`.
      lines: ``[rows]`` the 1-based line (or row) number of each row in the file.
    """

    path: Path
    columns: Columns
    lines: np.ndarray
    kind: str = "line"

    def __post_init__(self):
        if not isinstance(self.columns, Columns):
            self.columns = Columns(self.columns)

    def __len__(self) -> int:
        return len(self.lines)

    def _cell(self, name: str, row: int):
        """One cell as a Python (or NumPy) value, without turning a whole Arrow column into objects."""
        col = self.columns.raw(name)
        return col[row].as_py() if _is_arrow(col) else col[row]

    def where(self, row: int) -> str:
        return f"{self.path}:{self.kind} {int(self.lines[row])}"

    def column(self, name: str, *, numeric: bool = True, option: str | None = None,
               float32: bool = False) -> np.ndarray:
        """A column, as float64 when ``numeric`` (with an error naming the first bad cell); a float32
        column stays float32 when ``float32`` (read so by :func:`read_table`'s ``narrow``)."""
        if name not in self.columns:
            hint = f" (set it with {option})" if option else ""
            raise DataError(f"{self.path}: no column {name!r}{hint}; {_columns_hint(name, self.columns)}")
        if not numeric:
            return self.columns[name]
        col = self.columns.raw(name)
        if _is_arrow(col):
            out = _floats_of_arrow(col)
            if out is None:  # a cell pyarrow does not read as a number: cell by cell, naming it
                col = self.columns[name]
        elif col.dtype.kind in "fiub":
            out = col if float32 and col.dtype == np.float32 else col.astype(np.float64, copy=False)
        else:
            out = _floats_of_text(col)
        if out is None:
            out = np.empty(len(col))
            for i, v in enumerate(col):
                try:
                    out[i] = _to_float(v)
                except (TypeError, ValueError):
                    what = "no value (the key is missing or null)" if v is None else f"a non-numeric value {_short(v)}"
                    raise DataError(f"{self.where(i)}: column {name!r} has {what}") from None
                except OverflowError:
                    raise DataError(f"{self.where(i)}: column {name!r} has a number too large for a float "
                                    f"({_short(v)})") from None
        bad = ~np.isfinite(out)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            more = f" ({int(bad.sum()) - 1} more such rows)" if bad.sum() > 1 else ""
            raise DataError(f"{self.where(i)}: column {name!r} is {_short(self._cell(name, i))}, not a finite "
                            f"number{more}")
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

    def codes(self, name: str, *, option: str | None = None) -> tuple[np.ndarray, list]:
        """Each row's identifier as an index into the distinct identifiers (in order of first appearance).

        Returns ``(codes, ids)``: ``codes`` ``[rows]`` integers, ``ids`` the distinct values of
        :meth:`keys` (``keys(name)[i] == ids[codes[i]]``), with the same errors. Vectorised
        (pyarrow ``unique``/``index_in``, NumPy ``unique``) for text columns read by pyarrow and
        for numeric columns; cell by cell otherwise.
        """
        if name not in self.columns:
            self.column(name, numeric=False, option=option)  # raises the error naming the columns there are
        col = self.columns.raw(name)
        if _is_arrow(col) and _is_dictionary(col):  # read as codes (_gather): distinct, in order of first appearance
            return col.indices.to_numpy(), col.dictionary.to_pylist()
        if _is_arrow(col):
            import pyarrow.compute as pc

            blank = _blank(col)
            if pc.any(blank).as_py():
                i = int(np.flatnonzero(blank.to_numpy(zero_copy_only=False))[0])
                raise DataError(f"{self.where(i)}: column {name!r} is empty")
            return _factorize(col)
        if col.dtype.kind == "U" and len(col):  # NumPy text (.npz): a blank cell is refused, as by keys()
            blank = np.char.str_len(np.char.strip(col)) == 0
            if blank.any():
                raise DataError(f"{self.where(int(np.flatnonzero(blank)[0]))}: column {name!r} is empty")
        whole = col.dtype.kind == "f" and np.isfinite(col).all() and (col == np.round(col)).all()
        if (col.dtype.kind in "iu" or whole) and _arrow_available():
            return _factorize(col if col.dtype.kind in "iu" else col.astype(np.int64))
        if col.dtype.kind in "iuU" or whole:
            uniq, first, inverse = np.unique(col if col.dtype.kind in "iuU" else col.astype(np.int64),
                                             return_index=True, return_inverse=True)
            rank = np.argsort(first, kind="stable")  # the distinct ids in order of first appearance
            new = np.empty(len(rank), np.int64)
            new[rank] = np.arange(len(rank))
            return new[inverse.reshape(-1)], uniq[rank].tolist()
        index: dict = {}
        keys = self.keys(name, option=option)
        return np.fromiter((index.setdefault(k, len(index)) for k in keys), np.int64, len(keys)), list(index)


def _arrow_available() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _factorize(col) -> tuple[np.ndarray, list]:
    """``(codes [rows] int32, distinct values in order of first appearance)`` of a pyarrow text
    column or a NumPy integer column, by pyarrow's hash kernels (``unique``, ``index_in``)."""
    import pyarrow.compute as pc

    uniq = pc.unique(col, memory_pool=_pool())
    codes = pc.index_in(col, value_set=uniq, memory_pool=_pool())
    return codes.to_numpy(), uniq.to_pylist()  # int32


def _blank(col):
    """Booleans: which cells of a pyarrow text column are empty or only spaces."""
    import pyarrow.compute as pc

    pool = _pool()
    return pc.or_(pc.equal(pc.utf8_length(col, memory_pool=pool), 0, memory_pool=pool),
                  pc.utf8_is_space(col, memory_pool=pool), memory_pool=pool)


def _floats_of_arrow(col) -> np.ndarray | None:
    """A pyarrow text column as float64 (surrounding spaces allowed, as ``float()`` allows them), or
    None when some cell is not a number pyarrow reads (``float()`` then names it, or reads it)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for text in (col, None):
        try:
            return pc.cast(col if text is not None else pc.utf8_trim_whitespace(col), pa.float64(),
                           memory_pool=_pool()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            continue
    return None


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


def read_table(path, *, columns=None, numeric=(), keys=(), narrow=()) -> Table:
    """Reads a JSONL, CSV, Parquet or NPZ file into a :class:`Table`.

    Args:
      path: the file.
      columns: optional names of the columns needed: large files read by pyarrow keep only these
        (all columns when one of them is not in the file, so that the error lists them).
      numeric: of ``columns``, those that will be read as numbers: a large CSV file's cells are then
        converted block by block as they are read (never held as text); a cell that is not a finite
        number sends the file to the text reader, whose error names its line.
      keys: of ``columns``, identifiers (prompt ids): a large JSON Lines or CSV file's text or
        integer ids are then held as codes into their distinct values, block by block (a pyarrow
        dictionary array, distinct values in order of first appearance: :meth:`Table.codes`).
      narrow: of ``numeric``, those a large JSON Lines or CSV file may hold as float32 (values
        rounded to float32 once, as :class:`Samples` would; checked finite before rounding).
    """
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
        keep = None if columns is None else tuple(dict.fromkeys(columns))
        table = (readers[suffix](path, keep, tuple(numeric), tuple(keys), tuple(narrow)) if suffix != ".npz"
                 else readers[suffix](path))
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


#: Uncompressed JSON Lines and CSV files from this size on (bytes) are read by pyarrow's vectorised
#: readers when pyarrow is installed (JSON Lines 10x, CSV 5x faster than line by line, and a
#: fraction of the memory at 1M rows; benchmarks/bench_io.py); a file they cannot read exactly as
#: the line-by-line readers would (same rows, same line numbers, same values) is read line by line,
#: whose errors name the line.
ARROW_MIN_BYTES = 4 * 2**20
_ARROW_TYPES = ("int64", "double", "bool", "string", "large_string")


def _arrow_modules(path: Path):
    """``pyarrow`` when the file is one for the vectorised readers (uncompressed, large enough), else None."""
    if _format(path)[1] is not None or path.stat().st_size < ARROW_MIN_BYTES:
        return None
    try:
        import pyarrow
    except ImportError:
        return None
    return pyarrow


def _pool():
    """The memory pool of the vectorised readers: the system allocator's, which gives freed blocks
    back (pyarrow's default, mimalloc, kept 25-35 MB more resident at 1M rows; bench_io.py)."""
    import pyarrow as pa

    return pa.system_memory_pool()


def _line_numbers(first: int, rows: int) -> np.ndarray:
    """``[rows]`` consecutive line numbers from ``first`` (int32 where they fit: half the memory)."""
    return np.arange(first, first + rows, dtype=np.int32 if first + rows < 2**31 else np.int64)


def _scan_lines(path: Path, block: int = 2**20) -> tuple[int, bool, bool, bool]:
    """``(lines, byte-order mark, NUL byte, double quote)`` of a file, read a block at a time (no
    copy of the file). ``lines`` counts the last line whether or not it ends in a newline.
    """
    lines, nul, quote, last = 0, False, False, b"\n"
    with open(path, "rb") as f:
        bom = f.read(3) == b"\xef\xbb\xbf"
        f.seek(0)
        while data := f.read(block):
            lines += data.count(b"\n")
            nul = nul or b"\x00" in data
            quote = quote or b'"' in data
            last = data[-1:]
    return lines + (last != b"\n"), bom, nul, quote


def _read_jsonl_arrow(path: Path) -> Table | None:
    """The file by ``pyarrow.json``, or None where the result could differ from :func:`_read_jsonl`'s.

    Accepted only when every line holds one object, every object every column, and every column
    is a number, a boolean or a string (no lists, objects, nulls, or strings pyarrow would read as
    dates); anything else (blank lines, a repeated key, a byte-order mark, bad JSON) goes to the
    line-by-line reader, whose errors name the line. Text columns stay Arrow arrays
    (:class:`Columns`); the file is parsed from disk, never held whole.
    """
    pa = _arrow_modules(path)
    if pa is None:
        return None
    import pyarrow.json as pj

    lines, bom, _, _ = _scan_lines(path)
    if bom:
        return None
    try:
        t = pj.read_json(path, read_options=pj.ReadOptions(use_threads=False), memory_pool=_pool(),  # see _pool
                         parse_options=pj.ParseOptions(newlines_in_values=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if t.num_rows != lines or any(str(f.type) not in _ARROW_TYPES or t.column(f.name).null_count
                                  for f in t.schema):
        return None
    cols = {}
    for name in t.column_names:
        col = t.column(name)
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type):
            cols[name] = np.asarray(col.to_numpy(), dtype=bool if pa.types.is_boolean(col.type) else None)
        else:
            cols[name] = col
    n = t.num_rows
    del t, col
    return Table(path, cols, _line_numbers(1, n))


def _read_csv_arrow(path: Path) -> Table | None:
    """The file by ``pyarrow.csv``, every column as text (ids stay text: ``007`` is not ``7``), or
    None where the result could differ from the line-by-line reader's.

    The header is read by :func:`csv_records` (byte-order mark, repeated names: its errors); the
    rows are accepted only when each of the file's lines after the header is one row (no quoted
    newline, no blank line, no row of empty cells, no NUL byte), so row ``i`` is line ``i + 2``.
    Anything else (a wrong number of fields, bad quoting, invalid UTF-8) is read line by line,
    whose errors name the line.
    """
    pa = _arrow_modules(path)
    if pa is None:
        return None
    import pyarrow.csv as pcsv

    records = csv_records(path)
    header_line, header = next(records)
    records.close()
    lines, _, nul, quote = _scan_lines(path)
    if header_line != 1 or nul or quote:  # pyarrow reads some bad quoting ('"a"b', '"2' at the end) that csv refuses
        return None
    try:
        t = pcsv.read_csv(path, **_csv_options(pcsv, header, header), memory_pool=_pool())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if t.num_rows != lines - 1 or t.num_rows == 0 or _blank_rows(t):
        return None
    cols = {name: t.column(i) for i, name in enumerate(header)}
    n = t.num_rows
    del t
    return Table(path, cols, _line_numbers(2, n))


def _csv_options(pcsv, header, text, keep=None, skip_header: bool = True):
    """pyarrow.csv options: the given header (skipping the file's first line when ``skip_header``),
    every ``text`` column as strings, one thread (threads cost 35 MB at 1M rows and are no faster
    on 2 cores); ``keep`` the columns read (None: all)."""
    import pyarrow as pa

    return dict(
        read_options=pcsv.ReadOptions(column_names=header, skip_rows=int(skip_header), use_threads=False),
        parse_options=pcsv.ParseOptions(newlines_in_values=False, ignore_empty_lines=False),
        convert_options=pcsv.ConvertOptions(column_types={h: pa.string() for h in text}, include_columns=keep,
                                            strings_can_be_null=False, quoted_strings_can_be_null=False),
    )


def _has_blank_row(block: bytes) -> bool:
    """Whether a CSV block (without double quotes) has a line whose cells are all empty or spaces."""
    text = (block[:-1] if block.endswith(b"\n") else block).translate(None, b" \t\r\x0b\x0c,")
    return not text or text.startswith(b"\n") or text.endswith(b"\n") or b"\n\n" in text


class _NotExact(Exception):
    """A block the vectorised readers cannot read exactly as the line readers would; ``line``: the
    block's first line (every line before it was read)."""

    def __init__(self, line: int):
        super().__init__(line)
        self.line = line


def _csv_block_tables(path: Path, header: list[str], keep, numeric=()) -> Iterator[Table]:
    """The rows after the header, 4 MiB of whole lines at a time, as :class:`Table` blocks of the
    columns ``keep`` (text as pyarrow arrays; ``numeric`` ones as float64, their text never held).

    A block with a double quote is read by the csv module (pyarrow reads some bad quoting that
    csv refuses); others by ``pyarrow.csv``, accepted when each line is one row. Raises
    :class:`_NotExact` at a block it cannot read exactly as :func:`csv_records` would (a NUL byte,
    a wrong number of fields, a blank row, a number cell that is not a finite number, ...).
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    first = 2  # the line of the block's first row
    for block in _line_blocks(path, skip_first=True):
        if b"\x00" in block:
            raise _NotExact(first)
        if b'"' in block:
            got = _csv_block_by_python(block, header, keep, pa)
            if got is None:
                raise _NotExact(first)
            t, at = got
            lines = at + (first - 1)
        else:
            if _has_blank_row(block):
                raise _NotExact(first)  # a row of empty cells, which the line reader skips
            try:
                t = pcsv.read_csv(pa.BufferReader(block), **_csv_options(pcsv, header, keep, list(keep), False),
                                  memory_pool=_pool())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise _NotExact(first) from None
            if t.num_rows != _lines_in(block):
                raise _NotExact(first)
            lines = _line_numbers(first, t.num_rows)
        cols = {}
        for k in keep:
            if k in numeric:
                x = _floats_of_arrow(t.column(k))
                if x is None or not np.isfinite(x).all():
                    raise _NotExact(first)
                cols[k] = x
            else:
                cols[k] = t.column(k)  # its chunks (combine_chunks would allocate from pyarrow's default pool)
        del t
        if len(lines):
            yield Table(path, cols, lines)
        first += block.count(b"\n")


def _read_csv_numeric(path: Path, keep, numeric, keys=(), narrow=()) -> Table | None:
    """Only the columns ``keep`` by :func:`_csv_block_tables`, the ``numeric`` ones converted to
    float64 block by block (a 1M-row file's number columns as text are 1.4x the file). None when
    a block cannot be read exactly as the line reader would, or a kept column is missing (the
    text readers then read the file, and their errors name the line)."""
    pa = _arrow_modules(path)
    if pa is None or keep is None or not numeric or not set(numeric) <= set(keep):
        return None
    records = csv_records(path)
    header_line, header = next(records)
    records.close()
    if header_line != 1 or not set(keep) <= set(header):
        return None
    try:
        return _gather(path, _csv_block_tables(path, header, keep, numeric), _scan_lines(path)[0] - 1, keys, narrow)
    except _NotExact:
        return None


def _csv_block_by_python(block: bytes, header: list[str], keep, pa):
    """A block of whole lines read by the csv module (as :func:`csv_records` reads them): ``(pyarrow
    table of the ``keep`` columns as text, [rows] line of each row within the block, from 1)``,
    or None for anything :func:`csv_records` would refuse or skip (its errors then name the line)."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        return None
    index = [header.index(k) for k in keep]
    cols: list[list[str]] = [[] for _ in keep]
    at: list[int] = []
    with _csv_field_limit():
        reader = csv.reader(_io.StringIO(text, newline=""), strict=True)
        try:
            for row in reader:
                if len(row) != len(header) or not any(cell.strip() for cell in row):
                    return None
                for col, i in zip(cols, index):
                    col.append(row[i])
                at.append(reader.line_num)
        except csv.Error:
            return None
    return pa.table({k: pa.array(col, pa.string()) for k, col in zip(keep, cols)}), np.asarray(at)


def _blank_rows(t) -> bool:
    """Whether some row's cells are all empty or spaces (the line-by-line reader skips such rows)."""
    import pyarrow.compute as pc

    blank = None
    for col in t.columns:
        b = _blank(col)
        blank = b if blank is None else pc.and_(blank, b)
        if not pc.any(blank).as_py():
            return False
    return True


#: Bytes of whole lines the vectorised readers parse at a time. Each block's temporaries (its
#: bytes, pyarrow's parsed columns, text to float) are freed before the next, but the peak grows
#: with the block: a 1M-row CSV (22 MB) loaded at 41, 43, 49 and 70 MB above pyarrow's import and
#: JAX's backend with blocks of 256 KiB, 512 KiB, 1 MiB and 4 MiB, in times alike within the
#: noise (benchmarks/README.md, "Loading 1,000,000 rows").
BLOCK_BYTES = 2**19


def _line_blocks(path: Path, skip_first: bool = False, size: int | None = None) -> Iterator[bytes]:
    """The file's bytes in blocks of whole lines (about ``size`` bytes each; the last one may lack
    its newline), after the first line when ``skip_first`` (a CSV header); ``size`` defaults to
    :data:`BLOCK_BYTES`."""
    size = BLOCK_BYTES if size is None else size
    with open(path, "rb") as f:
        if skip_first:
            f.readline()
        rest = b""
        while data := f.read(size):
            data = rest + data
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if cut:
                yield data[:cut]
        if rest:
            yield rest


def _lines_in(block: bytes) -> int:
    return block.count(b"\n") + (not block.endswith(b"\n"))


def _jsonl_block_tables(path: Path, keep) -> Iterator[Table]:
    """The file 4 MiB of whole lines at a time, parsed by ``pyarrow.json``, as :class:`Table` blocks
    of the columns ``keep`` (numbers as NumPy, text as pyarrow arrays; the other columns dropped as
    each block is parsed). Raises :class:`_NotExact` at a block it cannot read exactly as the line
    reader would (:func:`_read_jsonl_arrow`'s conditions, on the kept columns; a kept column absent)."""
    import pyarrow as pa
    import pyarrow.json as pj

    with open(path, "rb") as f:
        if f.read(3) == b"\xef\xbb\xbf":
            raise _NotExact(1)
    first = 1
    for block in _line_blocks(path):
        try:
            t = pj.read_json(pa.BufferReader(block), read_options=pj.ReadOptions(use_threads=False),
                             parse_options=pj.ParseOptions(newlines_in_values=False), memory_pool=_pool())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise _NotExact(first) from None
        if t.num_rows != _lines_in(block) or any(k not in t.column_names for k in keep):
            raise _NotExact(first)
        cols = {}
        for k in keep:
            col = t.column(k)
            if str(col.type) not in _ARROW_TYPES or col.null_count:
                raise _NotExact(first)
            text = pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
            cols[k] = col if text else np.asarray(col.to_numpy())
        yield Table(path, cols, _line_numbers(first, t.num_rows))
        first += t.num_rows
        del t


def _read_jsonl_blocks(path: Path, keep, keys=(), narrow=()) -> Table | None:
    """Only the columns ``keep`` by :func:`_jsonl_block_tables` (memory: the kept columns', a block
    at a time; not the parsed file's), or None where the line reader could read otherwise."""
    if _arrow_modules(path) is None or keep is None:
        return None
    try:
        return _gather(path, _jsonl_block_tables(path, keep), _scan_lines(path)[0], keys, narrow)
    except _NotExact:
        return None


def _gather(path: Path, blocks: Iterator[Table], most: int, keys=(), narrow=(), kind: str = "line") -> Table | None:
    """The blocks of a file as one table: number columns written into arrays of ``most`` rows
    allocated once (no list of per-block arrays to concatenate: the allocator keeps less; float32
    for the columns ``narrow``), text columns as chunked Arrow arrays, and the columns ``keys`` of
    text or integers as codes (:class:`_Codes`). None where a column is numbers in one block and
    text (or booleans) in another, a key is blank, or the blocks hold more than ``most`` rows (the
    line readers then read the file, and their errors name the line)."""
    import pyarrow as pa

    numbers: dict[str, np.ndarray] = {}
    texts: dict[str, list] = {}
    codes: dict[str, _Codes] = {}
    lines = np.empty(most, np.int32 if most + 2 < 2**31 else np.int64)
    rows = 0
    for t in blocks:
        n = len(t)
        if rows + n > most:
            return None
        for k in t.columns:
            x = t.columns.raw(k)
            if k in keys and (_is_arrow(x) or x.dtype.kind in "iu") and k not in numbers:
                if not codes.setdefault(k, _Codes(most)).add(x, rows):
                    return None
                continue
            if _is_arrow(x):
                if k in numbers:
                    return None
                texts.setdefault(k, []).extend(getattr(x, "chunks", [x]))
                continue
            if k in texts or k in codes or (k in numbers and (numbers[k].dtype.kind == "b") != (x.dtype.kind == "b")):
                return None
            small = k in narrow and x.dtype.kind in "iuf" and _fits_float32(x)
            if k not in numbers:  # aligned: handed to JAX without a copy when it is already [P, N] (_Groups.pad)
                numbers[k] = _zeros(most, np.float32 if small else x.dtype)
            elif numbers[k].dtype == np.float32 and not small:  # a value float32 cannot hold: float64 after all
                numbers[k] = numbers[k].astype(np.float64)
            elif numbers[k].dtype != np.float32 and np.result_type(numbers[k].dtype, x.dtype) != numbers[k].dtype:
                numbers[k] = numbers[k].astype(np.result_type(numbers[k].dtype, x.dtype))  # ints, then floats
            if numbers[k].dtype == np.float32 and x.dtype.kind in "iu":
                x = x.astype(np.float64)  # into float32 by way of float64, as the line readers round integers
            numbers[k][rows:rows + n] = x
        lines[rows:rows + n] = t.lines
        rows += n
    if rows == 0:
        return None
    cols = {k: numbers[k][:rows] if k in numbers else
            codes[k].array(rows) if k in codes else pa.chunked_array(texts[k], type=pa.string())
            for k in list(numbers) + list(codes) + list(texts)}
    return Table(path, cols, lines[:rows], kind)


def _fits_float32(x: np.ndarray) -> bool:
    """Whether every value is finite and within float32's range (rounding makes none infinite)."""
    if not len(x):
        return True
    top = float(np.max(np.abs(x))) if x.dtype.kind == "f" else float(max(abs(int(x.max())), abs(int(x.min()))))
    return top <= float(np.finfo(np.float32).max)


class _Codes:
    """A column of identifiers read block by block as ``[rows]`` int32 codes into its distinct values
    (in order of first appearance), by pyarrow's hash kernels; text and integer blocks are not mixed
    (``7`` and ``"7"`` are two ids to the line readers: they decide)."""

    def __init__(self, most: int):
        self.codes = np.empty(most, np.int32)
        self.index: dict = {}
        self.kind = None

    def add(self, x, at: int) -> bool:
        """Writes the codes of block ``x`` (pyarrow text, or NumPy integers) at row ``at``; False for a
        blank text cell or a block of another kind than the earlier ones."""
        import pyarrow as pa
        import pyarrow.compute as pc

        kind = "text" if _is_arrow(x) else "int"
        if self.kind not in (None, kind) or (kind == "text" and pc.any(_blank(x)).as_py()):
            return False
        self.kind = kind
        pool = _pool()  # every buffer from the system allocator (see _pool)
        x = x if kind == "text" else pa.array(x, memory_pool=pool)
        uniq = pc.unique(x, memory_pool=pool)
        local = pc.index_in(x, value_set=uniq, memory_pool=pool)
        local = local.to_numpy() if isinstance(local, pa.Array) else np.concatenate(  # (combine_chunks: the
            [c.to_numpy() for c in local.chunks])  # default pool, whatever pool it is given; 5 MB more resident)
        index = self.index
        to_global = np.fromiter((index.setdefault(v, len(index)) for v in uniq.to_pylist()), np.int32, len(uniq))
        self.codes[at:at + len(local)] = to_global[local]
        return True

    def array(self, rows: int):
        """The column: a pyarrow dictionary array (codes into the distinct values)."""
        import pyarrow as pa

        values = pa.array(list(self.index), pa.string() if self.kind == "text" else pa.int64())
        return pa.DictionaryArray.from_arrays(pa.array(self.codes[:rows]), values)


def _slice(t: Table, start: int, stop: int) -> Table:
    """Rows ``start:stop`` of a table (views: no copy)."""
    cols = {k: (v.slice(start, stop - start) if _is_arrow(v) else v[start:stop])
            for k, v in ((k, t.columns.raw(k)) for k in t.columns)}
    return Table(t.path, cols, t.lines[start:stop], t.kind)


def _concat(tables: list[Table], strict: bool = False) -> Table | None:
    """Tables of one file, one after the other (their columns are taken from them, one column at a
    time: the pieces are spent). A column that is numbers in one piece and text in another (or
    absent from one) becomes an object column, or with ``strict`` the result is None. Needs pyarrow
    only for pyarrow's own text columns (the line readers, used without it, give NumPy columns)."""
    if not tables:
        return None
    names = list(dict.fromkeys(k for t in tables for k in t.columns))
    cols = {}
    for k in names:
        parts = [t.columns._data.pop(k, None) for t in tables]
        kinds = {None if x is None else "text" if _is_arrow(x) else "bool" if x.dtype.kind == "b" else
                 "number" if x.dtype.kind in "iuf" else "other" for x in parts}
        if kinds == {"text"}:
            import pyarrow as pa

            cols[k] = pa.chunked_array([c for x in parts for c in getattr(x, "chunks", [x])], type=pa.string())
        elif len(kinds) == 1 and kinds <= {"number", "bool"}:
            cols[k] = np.concatenate(parts)
        elif strict:
            return None
        else:  # as the line readers have them: Python values, None where a piece lacks the column
            cols[k] = np.concatenate([_object_column([None] * len(t)) if x is None else
                                      np.asarray(x.to_numpy(zero_copy_only=False), dtype=object) if _is_arrow(x)
                                      else x.astype(object) for x, t in zip(parts, tables)])
    lines = np.concatenate([t.lines for t in tables])
    return Table(tables[0].path, cols, lines, tables[0].kind)


def _rechunk(tables: Iterator[Table], rows: int) -> Iterator[Table]:
    """Tables of any sizes -> tables of ``rows`` rows (the last one fewer), in order."""
    queue: list[Table] = []
    have = 0
    for t in tables:
        queue.append(t)
        have += len(t)
        while have >= rows:
            pieces, need = [], rows
            while need:
                head = queue[0]
                take = min(need, len(head))
                pieces.append(_slice(head, 0, take))
                if take == len(head):
                    queue.pop(0)
                else:
                    queue[0] = _slice(head, take, len(head))
                need -= take
            have -= rows
            yield _concat(pieces)
    if have:
        yield _concat(queue)


def _read_jsonl(path: Path, keep=None, numeric=(), keys=(), narrow=()) -> Table:
    for fast in (_read_jsonl_blocks, _read_jsonl_arrow):
        table = fast(path, keep, keys, narrow) if fast is _read_jsonl_blocks else fast(path)
        if table is not None:
            return table
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


def _read_csv(path: Path, keep=None, numeric=(), keys=(), narrow=()) -> Table:
    fast = _read_csv_numeric(path, keep, numeric, keys, narrow) or _read_csv_arrow(path)
    if fast is not None:
        return fast
    records = csv_records(path)
    _, header = next(records)
    lines, rows = [], []
    for n, row in records:
        lines.append(n)
        rows.append(row)
    cols = {name: np.array([r[i] for r in rows], dtype=object) for i, name in enumerate(header)}
    return Table(path, cols, np.asarray(lines))


def _read_parquet(path: Path, keep=None, numeric=(), keys=(), narrow=()) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'jaxlimits[parquet]')") from None
    try:
        names = pq.read_schema(path).names
        if keep is not None and (not set(keep) <= set(names) or len(set(names)) != len(names)):
            keep = None  # all the columns: the errors (a missing or repeated name) list them
        if keep is not None:
            try:  # batch by batch, as the text files' blocks: ids as codes, float32 where asked
                pf = pq.ParquetFile(path)
                table = _gather(path, _parquet_block_tables(path, pf, keep), pf.metadata.num_rows, keys, narrow,
                                kind="row")
                if table is not None:
                    return table
            except _NotExact:
                pass
        t = pq.read_table(path, columns=None if keep is None else list(keep), use_threads=False)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    repeated = sorted({h for h in t.column_names if t.column_names.count(h) > 1})
    if repeated:
        raise DataError(f"{path}: the column name(s) {', '.join(map(repr, repeated))} appear twice; which one is "
                        f"meant is ambiguous: rename or drop one")
    import pyarrow as pa

    def column(col):  # text without nulls stays Arrow (Columns); the rest as before
        if (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) and not col.null_count:
            return col
        return np.asarray(col.to_numpy(zero_copy_only=False))

    cols = {name: column(t.column(name)) for name in t.column_names}
    return Table(path, cols, np.arange(1, t.num_rows + 1), kind="row")


def _parquet_block_tables(path: Path, pf, keep, rows: int = 2**16) -> Iterator[Table]:
    """The columns ``keep`` of a Parquet file ``rows`` rows at a time, as :class:`Table` blocks
    (numbers and booleans as NumPy, text as pyarrow arrays); :class:`_NotExact` at a null or a
    column of another type (the whole-table reader then reads it as before)."""
    import pyarrow as pa

    first = 1
    for batch in pf.iter_batches(batch_size=rows, columns=list(keep), use_threads=False):
        cols = {}
        for k in keep:
            col = batch.column(k)
            if col.null_count or str(col.type) not in ("int64", "int32", "double", "float", "bool", "string"):
                raise _NotExact(first)
            text = pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
            cols[k] = col if text else np.asarray(col.to_numpy())
        yield Table(path, cols, np.arange(first, first + batch.num_rows), kind="row")
        first += batch.num_rows


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


# ----------------------------------------------------------------------------------------------
# Reading long tables in chunks

_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".parquet", ".npz")


def _readable(p: Path) -> bool:
    """A supported file name: a format suffix, and a compression suffix only after a text format."""
    fmt, compression = _format(p)
    return fmt in _SUFFIXES and (compression is None or fmt in TEXT_FORMATS)


def expand_paths(paths) -> list[Path]:
    """Files to read, in order: each path, or the supported files of a directory (sorted)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and _readable(q))
            if not found:
                raise DataError(f"{p}: a directory with no {', '.join(_SUFFIXES)} files")
            out.extend(found)
        elif p.exists():
            if not _readable(p):
                raise DataError(f"{p}: unknown format {''.join(p.suffixes[-2:])!r}; use {', '.join(_SUFFIXES)} "
                                f"(text formats may end in {', '.join(COMPRESSIONS)})")
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or directory")
    if not out:
        raise DataError("no input files")
    return out


def _chunks_jsonl(path: Path, names, chunk_rows: int) -> Iterator[Table]:
    return _rechunk(_tables_jsonl(path, names, chunk_rows), chunk_rows)


def _tables_jsonl(path: Path, names, chunk_rows: int) -> Iterator[Table]:
    """Blocks by pyarrow (:func:`_jsonl_block_tables`) where they read the file as the
    line reader would, then (from the first block they cannot) line by line."""
    start = 1
    if _arrow_modules(path) is not None:
        try:
            yield from _jsonl_block_tables(path, names)
            return
        except _NotExact as e:
            start = e.line

    def table(lines, rows):
        cols = {k: _object_column([obj.get(k) for obj in rows]) for k in names
                if any(k in obj for obj in rows)}
        return Table(path, cols, np.asarray(lines))

    yield from _line_tables(jsonl_records(path), start, chunk_rows, table)


def _chunks_csv(path: Path, names, chunk_rows: int) -> Iterator[Table]:
    return _rechunk(_tables_csv(path, names, chunk_rows), chunk_rows)


def _tables_csv(path: Path, names, chunk_rows: int) -> Iterator[Table]:
    """Blocks by pyarrow (:func:`_csv_block_tables`, the kept columns as text) where
    they read the file as the line reader would, then (from the first block they cannot) line by line."""
    records = csv_records(path)
    header_line, header = next(records)
    keep = [(i, h) for i, h in enumerate(header) if h in names]
    start = 0
    if _arrow_modules(path) is not None and header_line == 1:
        try:
            yield from _csv_block_tables(path, header, [h for _, h in keep])
            return
        except _NotExact as e:
            start = e.line

    def table(lines, rows):
        cols = {h: np.array([r[i] for r in rows], dtype=object) for i, h in keep}
        return Table(path, cols, np.asarray(lines))

    yield from _line_tables(records, start, chunk_rows, table)


def _line_tables(records, start: int, chunk_rows: int, table) -> Iterator[Table]:
    """``table(lines, rows)`` of each run of ``chunk_rows`` records ``(line, row)`` from line ``start`` on:
    the line-by-line end of the chunk readers (the part pyarrow could not read exactly)."""
    lines, rows = [], []
    for n, row in records:
        if n < start:
            continue
        lines.append(n)
        rows.append(row)
        if len(rows) >= chunk_rows:
            yield table(lines, rows)
            lines, rows = [], []
    if rows:
        yield table(lines, rows)


def _chunks_parquet(path: Path, names, chunk_rows: int) -> Iterator[Table]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'jaxlimits[parquet]')") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    present = [n for n in names if n in pf.schema_arrow.names]
    start = 1
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=present):
        cols = {n: np.asarray(batch.column(n).to_numpy(zero_copy_only=False)) for n in present}
        yield Table(path, cols, np.arange(start, start + batch.num_rows), kind="row")
        start += batch.num_rows


def _chunks_npz(path: Path, names, chunk_rows: int) -> Iterator[Table]:
    """Reads the ``.npy`` members of an ``.npz`` (compressed or not) ``chunk_rows`` at a time."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    with zf:
        members = {Path(m).stem: m for m in zf.namelist() if m.endswith(".npy")}
        streams, total = {}, None
        for name in names:
            if name not in members:
                continue
            fh = zf.open(members[name])
            try:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(fh)
            except ValueError as e:
                raise DataError(f"{path}: member {members[name]} is not a .npy array ({e})") from None
            if fortran and len(shape) > 1:
                raise DataError(f"{path}: column {name!r} is a Fortran-ordered array; store 1-D columns")
            if dtype.hasobject:
                raise DataError(f"{path}: column {name!r} holds Python objects; store numbers or strings")
            count = int(np.prod(shape))
            if total is not None and count != total:
                raise DataError(f"{path}: arrays of different lengths ({name!r} has {count}, another {total});"
                                " a long table needs one length")
            total = count
            streams[name] = (fh, dtype)
        start = 0
        while total is not None and start < total:
            n = min(chunk_rows, total - start)
            cols = {}
            for name, (fh, dtype) in streams.items():
                buf = fh.read(n * dtype.itemsize)
                if len(buf) != n * dtype.itemsize:
                    raise DataError(f"{path}: member {name!r} is truncated")
                cols[name] = np.frombuffer(buf, dtype=dtype)
            yield Table(path, cols, np.arange(start + 1, start + n + 1), kind="row")
            start += n
        for fh, _ in streams.values():
            fh.close()


def iter_chunks(paths, columns: Sequence[str], chunk_rows: int = 100_000) -> Iterator[Table]:
    """Reads long-format files ``chunk_rows`` rows at a time, keeping only ``columns``.

    Args:
      paths: a file, a directory (its ``.jsonl``, ``.csv``, ``.parquet`` and ``.npz`` files in
        name order) or a list of them.
      columns: the column names to keep.
      chunk_rows: rows per chunk.

    Yields:
      :class:`jaxlimits.io.Table` chunks, whose ``lines`` are the rows' line (or row) numbers in
      their file, for error messages. Uncompressed JSON Lines and CSV files from
      ``io.ARROW_MIN_BYTES`` on are parsed by pyarrow in blocks of whole lines (cut to
      ``chunk_rows``), line by line from the first block pyarrow cannot read exactly as the line
      readers would.
    """
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be a positive number of rows, got {chunk_rows}")
    readers = {".jsonl": _chunks_jsonl, ".json": _chunks_jsonl, ".ndjson": _chunks_jsonl, ".csv": _chunks_csv,
               ".parquet": _chunks_parquet, ".npz": _chunks_npz}
    for path in expand_paths(paths):
        empty = True
        try:
            for table in readers[_format(path)[0]](path, tuple(columns), int(chunk_rows)):
                empty = False
                yield table
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not a text file ({e.reason})") from None
        if empty:
            raise DataError(f"{path}: no rows")


@dataclass
class Loaded:
    """Samples read from a table, with what was done to them.

    Attributes:
      samples: the :class:`Samples` ``[prompts, samples]``.
      prompt_ids: ``[prompts]`` the prompt identifiers, in file order of first appearance.
      source: a description of the input (file, columns, rows).
      notes: what the loader did that the user should know (deduplication, conflicts).
      lines: per prompt, ``[samples]`` the file's line (or row) of each of its samples, in the
        order of the :class:`Samples` row (for messages that name a sample); a sequence.
    """

    samples: Samples
    prompt_ids: list[Any]
    source: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    lines: Sequence[np.ndarray] = field(default_factory=list)
    kind: str = "line"

    def __repr__(self) -> str:
        s = self.samples
        return (f"Loaded({s.num_prompts} prompts x {s.num_samples} samples from {self.source.get('file', '?')!r}; "
                f"{len(self.notes)} notes; .samples, .prompt_ids, .lines)")

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
    if reward not in table.columns or len(table) == 0:
        return False
    col = table.columns.raw(reward)
    return (_is_arrow(col) or col.dtype == object) and _is_list_cell(table._cell(reward, 0))


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


class _Groups:
    """Rows grouped by prompt: ``codes`` ``[rows]`` (prompt of each row, 0..P-1) -> where each row goes
    in the padded ``[P, N_max]`` arrays, its prompt's row in file order (as ``Samples.from_ragged``
    pads a list of per-prompt arrays), with NumPy only: a stable argsort when the prompts' rows are
    not contiguous, none when they are (the layout samplers write)."""

    def __init__(self, codes: np.ndarray, num_prompts: int):
        self.codes = codes
        self.sizes = np.bincount(codes, minlength=num_prompts)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.width = int(self.sizes.max())
        self.order = None if bool(np.all(codes[1:] >= codes[:-1])) else np.argsort(codes, kind="stable")
        #: every prompt's rows together, in prompt order, all of one count: ``[rows]`` is ``[P, N]`` already
        self.uniform = self.order is None and bool(np.all(self.sizes == self.width))
        self._flat = None

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.sizes), self.width

    @property
    def flat(self) -> np.ndarray:
        """``[rows]`` each row's index in the flattened ``[P, N_max]`` arrays (made on first use)."""
        if self._flat is None:
            index = np.int32 if self.shape[0] * self.width < 2**31 else np.int64  # int32 where it fits
            pos = np.arange(len(self.codes), dtype=index)
            pos -= np.repeat(self.starts.astype(index), self.sizes)  # place of each row (prompt order) in its prompt
            if self.order is not None:
                pos[self.order] = pos.copy()
            self._flat = self.codes.astype(index) * index(self.width)
            self._flat += pos
        return self._flat

    def pad(self, values: np.ndarray, reuse: bool = False) -> np.ndarray:
        """``[rows]`` -> ``[P, N_max]`` (zeros past a prompt's rows), in the float dtype :class:`Samples`
        stores (float32 unless ``jax_enable_x64``: no float64 copy to be narrowed later). With
        ``reuse`` (the caller lets ``values`` go) a :attr:`uniform` layout in that dtype, at
        :data:`_ALIGN` bytes, is ``values`` reshaped: no copy (``jax.device_put`` keeps it, on a CPU)."""
        import jax

        dtype = jax.dtypes.canonicalize_dtype(np.result_type(values.dtype, np.float32))
        if reuse and self.uniform and values.dtype == dtype and values.ctypes.data % _ALIGN == 0:
            return values.reshape(self.shape)
        out = _zeros(self.shape, dtype)
        with np.errstate(over="ignore"):  # a value float32 cannot hold: Samples' check names it (inf)
            out.reshape(-1)[self.flat] = values
        return out

    def mask(self) -> np.ndarray:
        out = _zeros(self.shape, bool)
        if self.uniform:
            out[...] = True
        else:
            out.reshape(-1)[self.flat] = True
        return out

    def first_row(self, p: int) -> int:
        """The table row of prompt ``p``'s first sample."""
        return int(self.starts[p] if self.order is None else self.order[self.starts[p]])

    def ragged(self, values: np.ndarray) -> _Ragged:
        """``[rows]`` -> per prompt, its rows' values in file order."""
        return _Ragged(values if self.order is None else values[self.order], self.starts, self.sizes)


#: The alignment (bytes) at which JAX's CPU client uses a NumPy array's memory instead of copying it.
_ALIGN = 64


def _zeros(shape, dtype) -> np.ndarray:
    """``np.zeros(shape, dtype)`` at a :data:`_ALIGN`-byte boundary: ``jax.device_put`` of it on a CPU
    is the same memory, not a copy (NumPy's own allocations are 16-byte aligned)."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(size + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start:start + size].view(dtype).reshape(shape)


def _on_device(x: np.ndarray | None):
    """A padded array the caller lets go as a JAX array (the same memory on a CPU: :func:`_zeros`)."""
    if x is None:
        return None
    import jax

    return jax.device_put(x)


class _Ragged(Sequence):
    """Per prompt, a 1-D array (views into one flat array: no Python object per prompt until asked)."""

    def __init__(self, flat: np.ndarray, starts: np.ndarray, sizes: np.ndarray):
        self.flat, self.starts, self.sizes = flat, starts, sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, p):
        if isinstance(p, slice):
            return [self[i] for i in range(len(self))[p]]
        p = range(len(self))[p]  # negative indices; IndexError past the end
        return self.flat[self.starts[p]:self.starts[p] + self.sizes[p]]


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
    _spend: bool = False,
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
      _spend: the table is the caller's own (:func:`load`'s): its columns are let go once read, so
        that the padded arrays do not sit beside them.

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
    codes, ids = table.codes(prompt, option="--prompt-col")
    small = dedupe is None and not jax_x64()  # float32 columns (read_table's narrow) padded as they are
    values = {"reward": table.column(reward, option="--reward-col", float32=small)}
    if score is not None:
        values["score"] = table.column(score, option="--score-col", float32=small)
    if log_weight is not None:
        values["log_weight"] = table.column(log_weight, option="--log-weight-col", float32=small)
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

    source = {
        "file": str(table.path),
        "rows": len(table),
        "prompts": len(ids),
        "columns": {k: v for k, v in dict(prompt=prompt, reward=reward, score=score, log_weight=log_weight,
                                          count=count, dedupe=dedupe, base_logprob=base_logprob,
                                          sampler_logprob=sampler_logprob).items() if v is not None},
    }
    if keys is None:  # no merging: every row is a sample, placed by array indexing (no Python per row)
        groups = _Groups(codes, len(ids))
        del codes
        if counts is not None:
            bad = np.flatnonzero(np.bincount(groups.codes, weights=counts, minlength=len(ids)) <= 0)
            if bad.size:
                p = int(bad[0])
                raise DataError(f"{table.where(groups.first_row(p))}: prompt {ids[p]!r} has no sample with a "
                                f"positive count")
        if _spend:
            table.columns = Columns()
        padded = {name: groups.pad(values.pop(name), reuse=_spend) for name in list(values)}  # let go once padded
        if counts is not None:
            padded["count"] = groups.pad(counts)
            del counts
        samples = Samples(_on_device(padded.pop("reward")), scores=_on_device(padded.pop("score", None)),
                          log_weights=_on_device(padded.pop("log_weight", None)),
                          counts=_on_device(padded.pop("count", None)), mask=_on_device(groups.mask()))
        return Loaded(samples, ids, source, [], groups.ragged(table.lines), table.kind)
    order: dict[Any, list[int]] = {}
    for i, c in enumerate(codes.tolist()):
        order.setdefault(ids[c], []).append(i)
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
    columns = column_keywords(columns)
    numeric = [columns.get(k, d) for k, d in (("reward", "reward"), ("score", None), ("log_weight", None),
                                             ("count", None), ("base_logprob", None), ("sampler_logprob", None))]
    numeric = [c for c in numeric if c is not None]
    prompt = columns.get("prompt", "prompt_id")
    needed = [prompt, *numeric] + ([columns["dedupe"]] if columns.get("dedupe") else [])
    narrow = ()  # the columns padded as they are: held as float32 when Samples stores float32 (no float64 copy)
    if not columns.get("dedupe") and not jax_x64():
        narrow = [columns.get(k, d) for k, d in (("reward", "reward"), ("score", None), ("log_weight", None))]
        narrow = [c for c in narrow if c is not None and c not in (prompt, columns.get("count"),
                                                                   columns.get("base_logprob"),
                                                                   columns.get("sampler_logprob"))]
    table = read_table(path, columns=needed, numeric=numeric, keys=[prompt], narrow=narrow)
    return samples_from_table(table, **columns, _spend=True)


def jax_x64() -> bool:
    """Whether JAX computes in float64 (``jax_enable_x64``): :class:`Samples` then stores float64."""
    import jax

    return bool(jax.config.jax_enable_x64)
