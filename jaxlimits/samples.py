"""The data model: base-model samples of many prompts, as one pytree.

``Samples`` holds arrays of shape ``[prompts, samples]``:

* ``rewards`` -- what the policy is aligned to (``r`` in MATH.md §1);
* ``scores`` -- what the gain is measured with (``s``; defaults to ``rewards``);
* ``log_weights`` -- importance log-weights ``log pi0 - log q`` (or, with ``exact=True``, the
  log-probabilities of a finite law's whole support);
* ``counts`` -- multiplicities of deduplicated samples (a row seen ``m`` times);
* ``mask`` -- which entries are real (ragged prompts padded to a common width).

Counts and importance weights give the same point estimates but different standard errors
(MATH.md §3): a count says "drawn ``m`` times", a weight says "drawn once, from another law".
``exact=True`` says the rows are a law, not a sample: standard errors are then zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_FIELDS = ("rewards", "scores", "log_weights", "counts", "mask")


def _float_dtype(x) -> np.dtype:
    """The dtype a user array is computed in: float32 stays, float64 stays under x64, else default."""
    dt = np.dtype(x.dtype)
    if dt == np.float32 or (dt == np.float64 and jax.config.jax_enable_x64):
        return dt
    return np.dtype(jnp.result_type(float))  # float32, or float64 under jax_enable_x64


def _as_float(x, name: str) -> Array:
    if isinstance(x, jax.core.Tracer):  # floats narrower than float32 (bfloat16, float16, float8) are promoted
        wide = jnp.issubdtype(x.dtype, jnp.floating) and jnp.dtype(x.dtype).itemsize >= 4
        return x if wide else x.astype(jnp.result_type(float))
    arr = x if isinstance(x, jax.Array) else np.asarray(x)
    if arr.dtype == object or not (  # jnp.issubdtype also knows JAX's own floats (bfloat16, float8_*)
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
        or jnp.issubdtype(arr.dtype, jnp.floating)
    ):
        raise ValueError(f"{name} must be numeric, got an array of dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real, got dtype {arr.dtype}")
    return jnp.asarray(arr, dtype=_float_dtype(arr))


class PromptError(ValueError):
    """Bad input about one prompt: ``prompt`` is its row in :class:`Samples` (and ``sample`` an entry).

    The message says ``prompt 3`` (the row); :meth:`naming` rewrites it with the caller's own label
    for that prompt (the command line gives the file's prompt id and line).
    """

    #: Where a message names the prompt (replaced by :meth:`naming`).
    PLACE = "{prompt}"

    def __init__(self, template: str, prompt: int, sample: int | None = None):
        self.template, self.prompt = template, int(prompt)
        self.sample = None if sample is None else int(sample)
        super().__init__(template.replace(self.PLACE, f"prompt {self.prompt}"))

    def naming(self, label: str) -> str:
        """The message with the prompt called ``label`` instead of its row number."""
        return self.template.replace(self.PLACE, label)


def _is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs if x is not None)


@jax.tree_util.register_pytree_node_class
class Samples:
    """Per-prompt base-model samples and their rewards (a pytree; axes ``[prompts, samples]``).

    Args:
      rewards: ``[P, N]`` rewards ``r`` the policy is aligned to (a 1-D array is one prompt).
      scores: optional ``[P, N]`` scores ``s`` the gain is measured with; ``None`` means ``s = r``.
      log_weights: optional ``[P, N]`` importance log-weights; ``-inf`` drops an entry.
      counts: optional ``[P, N]`` whole-number multiplicities; ``0`` drops an entry.
      mask: optional ``[P, N]`` booleans, ``False`` for padding.
      exact: the rows of each prompt are the whole support of a finite law (with its
        log-probabilities as ``log_weights``): estimates are exact and standard errors zero.
      validate: check the data eagerly (default). Under ``jit`` the check is skipped.

    Raises:
      ValueError: naming the prompt and sample of a NaN or infinite value, a negative or
        fractional count, a prompt with no valid sample, or mismatched shapes; naming the field
        and prompt of values whose sums or squares would overflow the dtype (float32: rewards
        spread over more than ~1e18, or counts summing above ~1e18; see ``check_magnitudes``).

    Examples:
      >>> import jaxlimits as jl
      >>> s = jl.Samples([[0.0, 1.0, 2.0], [1.0, 1.0, 3.0]])
      >>> s.num_prompts, s.num_samples
      (2, 3)
    """

    __slots__ = _FIELDS + ("exact",)

    def __init__(
        self,
        rewards,
        scores=None,
        log_weights=None,
        counts=None,
        mask=None,
        *,
        exact: bool = False,
        validate: bool = True,
    ):
        r = _as_float(rewards, "rewards")
        if r.ndim == 1:
            r = r[None, :]
        if r.ndim != 2:
            raise ValueError(f"rewards must have shape [prompts, samples], got shape {tuple(r.shape)}")
        if r.shape[0] == 0 or r.shape[1] == 0:
            raise ValueError(f"rewards is empty (shape {tuple(r.shape)}): need at least one prompt and one sample")
        fields = {"rewards": r}
        for name, val in (("scores", scores), ("log_weights", log_weights), ("counts", counts), ("mask", mask)):
            if val is None:
                fields[name] = None
                continue
            if name == "mask":
                arr = val if isinstance(val, (jax.Array, jax.core.Tracer)) else np.asarray(val)
                if not (jnp.issubdtype(arr.dtype, jnp.bool_) or jnp.issubdtype(arr.dtype, jnp.number)):
                    raise ValueError(f"mask must be boolean, got dtype {arr.dtype}")
                arr = jnp.asarray(arr).astype(bool)
            else:
                arr = _as_float(val, name).astype(r.dtype)
            if arr.ndim == 1 and r.shape[0] == 1:
                arr = arr[None, :]
            if tuple(arr.shape) != tuple(r.shape):
                raise ValueError(f"{name} has shape {tuple(arr.shape)} but rewards has shape {tuple(r.shape)}")
            fields[name] = arr
        for name, val in fields.items():
            object.__setattr__(self, name, val)
        object.__setattr__(self, "exact", bool(exact))
        if validate and _is_concrete(*fields.values()):
            _validate(self)

    # -- pytree protocol (unflatten bypasses validation: leaves may be tracers or sentinels)
    def tree_flatten(self):
        return tuple(getattr(self, f) for f in _FIELDS), (self.exact,)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        for name, val in zip(_FIELDS, children):
            object.__setattr__(obj, name, val)
        object.__setattr__(obj, "exact", aux[0])
        return obj

    def __setattr__(self, name, value):
        raise AttributeError("Samples is immutable; use .replace(...)")

    def replace(self, **changes) -> Samples:
        """A copy with some fields replaced (validated again when concrete)."""
        kw = {f: getattr(self, f) for f in _FIELDS}
        exact = changes.pop("exact", self.exact)
        kw.update(changes)
        return Samples(**kw, exact=exact)

    def neutralised(self) -> Samples:
        """The same samples with neutral values in every entry that does not count.

        Entries masked out, with count 0 or with log-weight ``-inf`` are ignored by every
        estimator, and may hold anything (NaN included); but ``0 * nan`` is NaN, so code that
        sums over all entries reads them through this copy: rewards and scores 0 there, counts 0,
        log-weights ``-inf``. The caller's arrays are not modified; ``self`` is returned when
        nothing changes (eagerly).
        """
        valid = self.valid()
        concrete = _is_concrete(*(getattr(self, f) for f in _FIELDS))
        fields = {}
        for name, fill in (("rewards", 0), ("scores", 0), ("counts", 0), ("log_weights", -jnp.inf)):
            x = getattr(self, name)
            if x is not None:
                bad = ~valid & ~jnp.isfinite(x)
                if not concrete or bool(bad.any()):
                    fields[name] = jnp.where(bad, fill, x)
        if not fields:
            return self
        leaves = [fields.get(f, getattr(self, f)) for f in _FIELDS]
        return Samples.tree_unflatten((self.exact,), leaves)

    def __repr__(self) -> str:
        extras = [f for f in _FIELDS[1:] if getattr(self, f) is not None]
        extra = f", with {', '.join(extras)}" if extras else ""
        law = ", exact law" if self.exact else ""
        return f"Samples({self.num_prompts} prompts x {self.num_samples} samples, {self.dtype}{extra}{law})"

    # -- shape helpers
    @property
    def num_prompts(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_samples(self) -> int:
        """Width of the sample axis (the padded maximum for ragged data)."""
        return int(self.rewards.shape[1])

    @property
    def dtype(self):
        return self.rewards.dtype

    @property
    def has_scores(self) -> bool:
        return self.scores is not None

    def valid(self) -> Array:
        """``[P, N]`` booleans: the entries that count (mask, positive count, finite log-weight)."""
        v = jnp.ones(self.rewards.shape, bool) if self.mask is None else self.mask
        if self.counts is not None:
            v = v & (self.counts > 0)
        if self.log_weights is not None:
            v = v & (self.log_weights > -jnp.inf)
        return v

    def draws(self) -> Array:
        """``[P]`` number of draws per prompt, ``N = sum of counts`` over valid entries."""
        m = self.valid().astype(self.dtype)
        if self.counts is not None:
            m = m * jnp.where(self.valid(), self.counts, 0)
        return m.sum(axis=1)

    # -- constructors
    @classmethod
    def from_ragged(
        cls,
        rewards: Sequence[Any],
        scores: Sequence[Any] | None = None,
        log_weights: Sequence[Any] | None = None,
        counts: Sequence[Any] | None = None,
        *,
        exact: bool = False,
    ) -> Samples:
        """Pads a list of per-prompt 1-D arrays to ``[P, N_max]`` with a mask.

        Examples:
          >>> import jaxlimits as jl
          >>> s = jl.Samples.from_ragged([[1.0, 2.0, 3.0], [0.5]])
          >>> s.mask.tolist()
          [[True, True, True], [True, False, False]]
        """
        rows = [np.asarray(x).reshape(-1) for x in rewards]
        if not rows:
            raise ValueError("from_ragged needs at least one prompt")
        lengths = [len(x) for x in rows]
        for p, n in enumerate(lengths):
            if n == 0:
                raise ValueError(f"prompt {p} has no samples")
        width = max(lengths)

        def pad(name, seq, fill):
            if seq is None:
                return None
            seq = [np.asarray(x).reshape(-1) for x in seq]
            if len(seq) != len(rows):
                raise ValueError(f"{name} has {len(seq)} prompts but rewards has {len(rows)}")
            out = np.full((len(rows), width), fill, dtype=np.result_type(*[x.dtype for x in seq], np.float32))
            for p, (x, n) in enumerate(zip(seq, lengths)):
                if len(x) != n:
                    raise ValueError(f"{name} of prompt {p} has {len(x)} entries but its rewards have {n}")
                out[p, :n] = x
            return out

        mask = np.zeros((len(rows), width), bool)
        for p, n in enumerate(lengths):
            mask[p, :n] = True
        return cls(
            pad("rewards", rows, 0.0),
            scores=pad("scores", scores, 0.0),
            log_weights=pad("log_weights", log_weights, 0.0),
            counts=pad("counts", counts, 0.0),
            mask=mask,
            exact=exact,
        )

    @classmethod
    def from_counts(cls, values: Sequence[Any], counts: Sequence[Any], scores: Sequence[Any] | None = None) -> Samples:
        """Deduplicated samples: per prompt, distinct values and how often each was drawn."""
        return cls.from_ragged(values, scores=scores, counts=counts)

    @classmethod
    def from_law(
        cls,
        values: Sequence[Any],
        probs: Sequence[Any] | None = None,
        *,
        log_probs: Sequence[Any] | None = None,
        scores: Sequence[Any] | None = None,
    ) -> Samples:
        """An exact finite law per prompt: its support ``values`` and their probabilities.

        Every estimator is then an exact sum (standard errors are zero).

        Examples:
          >>> import jaxlimits as jl
          >>> law = jl.Samples.from_law([[0.0, 1.0]], [[0.7, 0.3]])
          >>> law.exact
          True
        """
        if (probs is None) == (log_probs is None):
            raise ValueError("from_law needs exactly one of probs or log_probs")
        if log_probs is None:
            log_probs = []
            for p, row in enumerate(probs):
                row = np.asarray(row, dtype=np.float64).reshape(-1)
                if np.any(~np.isfinite(row)) or np.any(row < 0):
                    bad = int(np.flatnonzero(~np.isfinite(row) | (row < 0))[0])
                    raise ValueError(f"probs[{p}][{bad}] = {row[bad]} is not a probability")
                with np.errstate(divide="ignore"):
                    log_probs.append(np.log(row))
        if isinstance(values, (np.ndarray, jax.Array)) and np.ndim(values) == 2:
            values = list(np.asarray(values))
            log_probs = list(np.asarray(log_probs))
            scores = None if scores is None else list(np.asarray(scores))
        return cls.from_ragged(values, scores=scores, log_weights=log_probs, exact=True)


def check_samples(x, where: str, name: str = "samples") -> Samples:
    """``x`` if it is a :class:`Samples`, else a TypeError naming the function and the argument."""
    if not isinstance(x, Samples):
        loaded = isinstance(getattr(x, "samples", None), Samples)
        hint = (" (wrap arrays first: jaxlimits.Samples(rewards, ...))" if hasattr(x, "shape") else
                " (jaxlimits.io.load returns a Loaded: pass its .samples)" if loaded else "")
        raise TypeError(f"{where}: {name} must be a jaxlimits.Samples, got {type(x).__name__}{hint}")
    return x


#: Entries (prompts x samples) the eager checks look at a time: their temporaries (booleans and one
#: copy in the samples' dtype) stay a few MB whatever the data's size.
_CHECK_ENTRIES = 2**18


def _blocks(num_prompts: int, num_samples: int) -> list[slice]:
    """Slices of whole prompts of about :data:`_CHECK_ENTRIES` entries each."""
    step = max(1, _CHECK_ENTRIES // max(num_samples, 1))
    return [slice(a, min(a + step, num_prompts)) for a in range(0, num_prompts, step)]


def _first_bad(bad_of, blocks: list[slice]) -> tuple[int, int, int] | None:
    """(prompt, sample, total) of the first True of ``bad_of(block)`` (``[prompts of block, N]``
    booleans) over the blocks of prompts, or None when there is none."""
    first, total = None, 0
    for sl in blocks:
        bad = bad_of(sl)
        n = int(np.count_nonzero(bad))
        if n and first is None:
            p, i = np.argwhere(bad)[0]
            first = (sl.start + int(p), int(i))
        total += n
    return None if first is None else (*first, total)


def _describe(name: str, arr: np.ndarray, found: tuple[int, int, int], what: str) -> PromptError:
    p, i, total = found
    more = f" ({total - 1} more such entries)" if total > 1 else ""
    return PromptError(f"{name}[{p}, {i}] = {arr[p, i]!r} {what} ({PromptError.PLACE}, sample {i}){more}", p, i)


def _validate(s: Samples) -> None:
    """Eager checks with messages that name the prompt and the sample.

    Reads the arrays in blocks of whole prompts (:data:`_CHECK_ENTRIES` entries), in their own
    dtype: no ``[P, N]`` temporary (host views of the arrays, not copies, on a CPU).
    """
    blocks = _blocks(*s.rewards.shape)
    mask = None if s.mask is None else np.asarray(s.mask)
    c = None if s.counts is None else np.asarray(s.counts)
    lw = None if s.log_weights is None else np.asarray(s.log_weights)

    def valid(sl, counts: bool = False, weights: bool = False) -> np.ndarray:
        """``[prompts of sl, N]``: the entries that count (with the count and weight clauses when asked)."""
        v = np.ones((sl.stop - sl.start, s.rewards.shape[1]), bool) if mask is None else mask[sl]
        if counts and c is not None:
            v = v & (c[sl] > 0)
        if weights and lw is not None:
            v = v & (lw[sl] > -np.inf)
        return v

    if c is not None:
        for bad_of, what in ((lambda sl: ~np.isfinite(c[sl]) & valid(sl), "is not finite"),
                             (lambda sl: (c[sl] < 0) & valid(sl), "is negative"),
                             (lambda sl: (c[sl] != np.round(c[sl])) & valid(sl),
                              "is not a whole number (fractional weights go in log_weights)")):
            found = _first_bad(bad_of, blocks)
            if found:
                raise _describe("counts", c, found, what)
    if lw is not None:
        found = _first_bad(lambda sl: (np.isnan(lw[sl]) | (lw[sl] == np.inf)) & valid(sl, counts=True), blocks)
        if found:
            raise _describe("log_weights", lw, found, "is not a log-weight (NaN or +inf)")
    fields = {name: np.asarray(getattr(s, name)) for name in ("rewards", "scores") if getattr(s, name) is not None}
    for name, arr in fields.items():
        found = _first_bad(lambda sl: ~np.isfinite(arr[sl]) & valid(sl, True, True), blocks)  # noqa: B023
        if found:
            raise _describe(name, arr, found, "is not finite; drop it or mask it out")
    empty = np.concatenate([~valid(sl, True, True).any(axis=1) for sl in blocks])
    if empty.any():
        p = int(np.flatnonzero(empty)[0])
        more = f" ({int(empty.sum()) - 1} more such prompts)" if empty.sum() > 1 else ""
        raise PromptError(
            f"{PromptError.PLACE} has no valid sample (all entries masked, zero counts or -inf log-weights){more}", p
        )
    draws = np.concatenate([
        valid(sl, True, True).sum(axis=1, dtype=np.float64) if c is None else
        np.where(valid(sl, True, True), c[sl], 0).sum(axis=1, dtype=np.float64) for sl in blocks])
    for name, arr in fields.items():  # per prompt, the largest and smallest valid value (exact in any dtype)
        top = np.concatenate([np.where(valid(sl, True, True), arr[sl], -np.inf).max(axis=1) for sl in blocks])
        bottom = np.concatenate([np.where(valid(sl, True, True), arr[sl], np.inf).min(axis=1) for sl in blocks])
        check_magnitudes(draws, top, bottom, s.dtype, name)


#: Headroom (a factor) kept below the largest number of the dtype by :func:`check_magnitudes`.
_HEADROOM = 16.0


def check_magnitudes(draws, top, bottom, dtype, field: str = "rewards", prompts=None) -> None:
    """ValueError naming the field and prompt whose values would overflow ``dtype`` (float32: 3.4e38).

    The estimators form, per prompt, ``sum m r``, ``sum m (r - r')^2`` and ``(sum m)^2``; with ``D``
    draws, ``M`` the largest ``|r|`` and ``S`` the spread ``max r - min r`` they stay finite when
    ``D^2``, ``D M`` and ``D S^2`` are below ``max / 16``.

    Args:
      draws, top, bottom: ``[P]`` number of draws, largest and smallest valid value (float64).
      dtype: the samples' float dtype.
      field: the name of the values in the message.
      prompts: optional names of the prompts for the message (default: their index).
    """
    label = (lambda p: f"prompt {p}") if prompts is None else (lambda p: f"prompt {prompts[p]!r}")  # noqa: E731
    big = float(np.finfo(np.dtype(dtype)).max) / _HEADROOM
    name = np.dtype(dtype).name
    wider = np.dtype(dtype).itemsize < 8
    hint = "use float64 (jax.config.update('jax_enable_x64', True))" if wider else "split the prompt"
    draws, top, bottom = (np.asarray(a, np.float64) for a in (draws, top, bottom))
    bad = draws * draws > big
    if bad.any():
        p = int(np.flatnonzero(bad)[0])
        raise ValueError(f"counts of {label(p)} sum to {draws[p]:.4g} draws: {name} cannot hold the square of "
                         f"that number (at most {np.sqrt(big):.3g} draws); {hint}")
    with np.errstate(invalid="ignore", over="ignore"):
        magnitude = np.maximum(np.abs(top), np.abs(bottom))
        spread = top - bottom
    fix = "use float64 or " if wider else ""
    for what, value, limit in (("magnitude", magnitude, big / draws), ("spread", spread, np.sqrt(big / draws))):
        bad = value > limit
        if bad.any():
            p = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{field} of {label(p)} have a {what} of {value[p]:.4g}: with its {draws[p]:.4g} draws the "
                f"sums of the estimators overflow {name} above {limit[p]:.3g}; {fix}rescale the {field}"
            )
