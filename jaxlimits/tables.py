"""Results as tables and short summaries: one implementation behind every result type's methods.

Every public result (:class:`jaxlimits.Frontier`, :class:`jaxlimits.Solution`, ...) has
``rows()`` (a list of dicts, one per point), ``to_dict()`` (column name -> NumPy array),
``to_pandas()`` (a ``pandas.DataFrame``; pandas is optional), a short ``repr`` and an HTML repr for
notebooks. They all call the functions here.

A result's *rows* are the points of its main axis (``[betas]``, ``[ns]``, ``[runs]``, or
``[prompts, betas]`` with an index column per axis). Its array fields of that shape are columns;
fields of a leading part of that shape (a per-prompt ``[prompts]``, a scalar) are repeated along
the rest; nested results and fields of other shapes are left out (they have their own tables).
Codes are spelled next to their numbers: ``reasons`` gets ``reason_names`` (``'bias+tail'``,
:func:`jaxlimits.estimators.reason_names`), a :class:`jaxlimits.status.Status` column
``status`` gets ``status_name`` (``'KL_AT_OR_ABOVE_CEILING'``).
"""

from __future__ import annotations

import dataclasses
import html as _html

import numpy as np

#: Rows shown by the HTML repr (the full table is ``to_pandas()`` or ``rows()``).
HTML_ROWS = 12


def fields(result) -> list[tuple[str, object]]:
    """``(name, value)`` of a NamedTuple's or dataclass's fields, in declaration order."""
    if dataclasses.is_dataclass(result):
        return [(f.name, getattr(result, f.name)) for f in dataclasses.fields(result)]
    return list(zip(result._fields, result))


def _is_result(value) -> bool:
    return dataclasses.is_dataclass(value) or hasattr(value, "_fields")


def _array(value):
    """A NumPy array of a numeric, boolean or string field; None for anything else."""
    if value is None or _is_result(value):
        return None
    if isinstance(value, (tuple, list)) and not all(isinstance(v, str) for v in value):
        return None
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - an object that is not array-like is simply not a column
        return None
    return arr if arr.dtype.kind in "biufUS" else None


def _status_names(codes: np.ndarray, names: dict) -> np.ndarray:
    return np.array([names.get(int(c), str(int(c))) for c in codes.ravel()], dtype=object).reshape(codes.shape)


def columns(result, *, shape_of: str, index: tuple[str, ...] = (), status: dict | None = None,
            exclude: tuple[str, ...] = ()) -> dict:
    """The result's table as columns: name -> NumPy array of one value per row.

    Args:
      result: a NamedTuple or dataclass result.
      shape_of: the field whose shape is the table's (``"betas"``, ``"n"``, ...).
      index: names of index columns, one per axis of that shape beyond the first when it has
        several (``("prompt", "beta_index")`` for ``[prompts, betas]``); a 1-d table has none.
      status: code -> name for integer fields named ``status`` or ``*_status`` (default: the
        one status type's :data:`jaxlimits.status.NAMES`).
      exclude: fields on another axis that may have the table's length by chance (``betas`` of a
        table over shifts).

    Returns:
      Columns in field order, each flattened to ``[rows]``; ``reasons`` followed by
      ``reason_names``, each status code field followed by ``<field>_name``.
    """
    from .estimators import reason_names
    from .status import NAMES

    status = NAMES if status is None else status
    shape = np.shape(np.asarray(getattr(result, shape_of)))
    cols: dict[str, np.ndarray] = {}
    if len(shape) > 1:
        grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
        for name, grid in zip(index, grids):
            cols[name] = grid.ravel()
    for name, value in fields(result):
        arr = None if name in exclude else _array(value)
        if arr is None or arr.shape != shape[: arr.ndim]:
            continue
        arr = np.broadcast_to(arr.reshape(arr.shape + (1,) * (len(shape) - arr.ndim)), shape).ravel()
        cols[name] = arr
        if name == "reasons":
            cols["reason_names"] = np.array([reason_names(c) for c in arr], dtype=object)
        elif (name == "status" or name.endswith("_status")) and arr.dtype.kind in "iu":
            cols[f"{name}_name"] = _status_names(arr, status)
    return cols


def rows(cols: dict) -> list[dict]:
    """Columns as a list of dicts of Python values (one per row)."""
    n = len(next(iter(cols.values()))) if cols else 0
    plain = {k: v.tolist() for k, v in cols.items()}
    return [{k: v[i] for k, v in plain.items()} for i in range(n)]


def to_pandas(cols: dict):
    """Columns as a ``pandas.DataFrame``.

    Raises:
      ImportError: pandas is not installed (``pip install pandas``).
    """
    try:
        import pandas as pd
    except ImportError as e:
        raise ImportError("to_pandas() needs pandas, which is not installed: pip install pandas "
                          "(rows() and to_dict() need nothing)") from e
    return pd.DataFrame(cols)


def _fmt(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.4g}"
    return str(x)


def span(values) -> str:
    """``'0.01..3.2'``: the finite range of an array (``'none finite'`` when it has no finite value)."""
    a = np.asarray(values, dtype=float).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        return "none finite"
    lo, hi = a.min(), a.max()
    return _fmt(lo) if lo == hi else f"{_fmt(lo)}..{_fmt(hi)}"


def flagged(reasons) -> str:
    """``'3 flagged (2 ceiling, 1 bias+tail)'`` for a reasons bitmask array (``'none flagged'``)."""
    from .estimators import reason_names

    codes = np.asarray(reasons).ravel()
    bad = codes[codes != 0]
    if bad.size == 0:
        return "none flagged"
    kinds, counts = np.unique(bad, return_counts=True)
    why = ", ".join(f"{int(n)} {reason_names(k)}" for k, n in zip(kinds, counts))
    return f"{bad.size} of {codes.size} flagged ({why})"


def summary(result, *, shape_of: str, headline: list[str]) -> str:
    """``Kind[shape](headline; ...)``: the short repr of a result."""
    shape = np.shape(np.asarray(getattr(result, shape_of)))
    dims = f"[{'x'.join(str(n) for n in shape)}]" if shape else ""
    return f"{type(result).__name__}{dims}({'; '.join(h for h in headline if h)})"


def html(result, cols: dict, text: str) -> str:
    """The HTML repr: the summary, then the table's first :data:`HTML_ROWS` rows."""
    n = len(next(iter(cols.values()))) if cols else 0
    head = "".join(f"<th>{_html.escape(k)}</th>" for k in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_html.escape(_fmt(v[i]))}</td>" for v in cols.values()) + "</tr>"
        for i in range(min(n, HTML_ROWS))
    )
    more = f"<p>... {n - HTML_ROWS} more rows: <code>.to_pandas()</code> or <code>.rows()</code></p>" if (
        n > HTML_ROWS) else ""
    return (f"<div><p><code>{_html.escape(text)}</code></p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}</div>")


# -- The methods every result type carries (``rows, to_dict, to_pandas, __repr__, _repr_html_ =
# tables.METHODS`` in its class body; NamedTuples cannot take a mixin). Each class defines
# ``_columns()`` (its :func:`columns`) and ``_summary()`` (its :func:`summary`).


def _rows(self) -> list[dict]:
    """The table: one dict per point, Python values (see :mod:`jaxlimits.tables`)."""
    return rows(self._columns())


def _to_dict(self) -> dict:
    """The table as columns: name -> NumPy array ``[rows]`` (see :mod:`jaxlimits.tables`)."""
    return self._columns()


def _to_pandas(self):
    """The table as a ``pandas.DataFrame`` (needs pandas; see :mod:`jaxlimits.tables`)."""
    return to_pandas(self._columns())


def _repr(self) -> str:
    try:
        return self._summary()
    except Exception:  # noqa: BLE001 - e.g. traced under jit: fall back to field shapes
        parts = ", ".join(f"{k}={getattr(v, 'shape', type(v).__name__)}" for k, v in fields(self))
        return f"{type(self).__name__}({parts})"


def _repr_html(self) -> str:
    try:
        return html(self, self._columns(), self._summary())
    except Exception:  # noqa: BLE001 - a repr never raises
        return f"<pre>{_html.escape(_repr(self))}</pre>"


METHODS = (_rows, _to_dict, _to_pandas, _repr, _repr_html)
