r"""A language model small enough to enumerate: a position-dependent bigram over ``V`` tokens.

Every response is a sequence ``y = (y_0, .., y_{L-1})`` of ``L`` tokens from a vocabulary of ``V``
(one prompt). The ``S = V^L`` sequences are numbered lexicographically, ``y_0`` most significant:
``index(y) = sum_t y_t V^{L-1-t}``. The base policy is

.. math::

   \pi_0(y) = \pi_0(y_0) \prod_{t=1}^{L-1} \pi_0^{(t)}(y_t \mid y_{t-1}),

and every law over sequences here is stored either as ``[S]`` log-probabilities of whole sequences
or as a **prefix table**: for each of the ``M = (V^L - 1)/(V - 1)`` prefixes (all sequences of
length ``0..L-1``) the log-probabilities ``[V]`` of the next token. A table over *full* prefixes can
represent any law over sequences (the chain rule), so the tilted optimum is reachable by a
tabular policy; the base model's table repeats its bigram rows.

Prefixes are laid out level by level: the prefixes of length ``t`` occupy rows
``offset_t .. offset_t + V^t - 1`` with ``offset_t = (V^t - 1)/(V - 1)``, in lexicographic order
(the row of prefix ``(y_0..y_{t-1})`` is ``offset_t + sum_i y_i V^{t-1-i}``).

Rewards are tables ``[S]`` over the enumerated sequences (:class:`Rewards`): a gold reward with a
token-additive part, a bigram (pair) part and a non-additive motif bonus, and proxies made of the
gold reward plus structured error. The tilted policy of MATH.md §2 is available both as a law over
sequences and as a prefix table (by a backward log-sum-exp over the soft values,
:func:`tilted_prefix_log_probs`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

#: Largest number of sequences ``V^L`` the helpers accept (enumeration is the point).
MAX_SEQUENCES = 2_000_000


def _check_sizes(vocab_size: int, length: int) -> None:
    if int(vocab_size) != vocab_size or vocab_size < 2:
        raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size}")
    if int(length) != length or length < 1:
        raise ValueError(f"length must be an integer >= 1, got {length}")
    if vocab_size**length > MAX_SEQUENCES:
        raise ValueError(
            f"V^L = {vocab_size}^{length} = {vocab_size**length} sequences is too many to enumerate "
            f"(at most {MAX_SEQUENCES})"
        )


def num_sequences(vocab_size: int, length: int) -> int:
    """``S = V^L``, the number of sequences."""
    return int(vocab_size) ** int(length)


def num_prefixes(vocab_size: int, length: int) -> int:
    """``M = sum_{t<L} V^t``, the number of prefixes (states before each token)."""
    return sum(int(vocab_size) ** t for t in range(int(length)))


def prefix_offsets(vocab_size: int, length: int) -> tuple[int, ...]:
    """Row offsets of the prefix levels ``t = 0..L`` in a prefix table (the last is ``M``)."""
    return tuple(sum(vocab_size**i for i in range(t)) for t in range(length + 1))


def shape_of(num_seq: int, vocab_size: int) -> int:
    """The length ``L`` with ``V^L = num_seq`` (ValueError if there is none)."""
    length, s = 0, 1
    while s < num_seq:
        s *= vocab_size
        length += 1
    if s != num_seq:
        raise ValueError(f"{num_seq} sequences is not a power of the vocabulary size {vocab_size}")
    return length


def sequences(vocab_size: int, length: int) -> np.ndarray:
    """All ``V^L`` sequences, ``[S, L]`` int32, in index order.

    Examples:
      >>> sequences(2, 3).tolist()[:3]
      [[0, 0, 0], [0, 0, 1], [0, 1, 0]]
    """
    _check_sizes(vocab_size, length)
    idx = np.arange(vocab_size**length)
    powers = vocab_size ** np.arange(length - 1, -1, -1)
    return ((idx[:, None] // powers[None, :]) % vocab_size).astype(np.int32)


def sequence_index(tokens: Array, vocab_size: int) -> Array:
    """Index ``sum_t y_t V^{L-1-t}`` of sequences ``[..., L]`` (the inverse of :func:`sequences`)."""
    tokens = jnp.asarray(tokens)
    powers = vocab_size ** jnp.arange(tokens.shape[-1] - 1, -1, -1)
    return jnp.sum(tokens * powers.astype(tokens.dtype), axis=-1)


class ToyLM(NamedTuple):
    """A position-dependent bigram base model (normalised log-probabilities).

    Attributes:
      first: ``[V]`` log-probabilities of the first token.
      transitions: ``[L-1, V, V]``; ``transitions[t-1, u, v] = log pi0(y_t = v | y_{t-1} = u)``.
    """

    first: Array
    transitions: Array

    @property
    def vocab_size(self) -> int:
        return int(self.first.shape[-1])

    @property
    def length(self) -> int:
        return int(self.transitions.shape[0]) + 1


def toy_lm(seed: int | np.random.Generator, vocab_size: int, length: int, *, temperature: float = 1.0,
           dtype=None) -> ToyLM:
    """A seeded random base model: logits ``N(0, temperature^2)``, normalised per row.

    Larger ``temperature`` makes the base model more peaked (lower entropy, larger KL ceiling).
    The random numbers come from NumPy (``np.random.default_rng(seed)``): construction is
    eager and cheap, and the same seed gives the same model on every backend.

    Args:
      seed: an int or a ``numpy.random.Generator``.
      vocab_size: ``V >= 2``. length: ``L >= 1``.
      temperature: scale of the random logits.
      dtype: float dtype (default: JAX's default float).

    Examples:
      >>> lm = toy_lm(0, vocab_size=3, length=4)
      >>> lm.transitions.shape
      (3, 3, 3)
    """
    _check_sizes(vocab_size, length)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    dtype = jnp.result_type(float) if dtype is None else dtype
    first, trans = _toy_lm_np(rng, vocab_size, length, temperature)
    return ToyLM(jnp.asarray(first, dtype), jnp.asarray(trans, dtype))


def _toy_lm_np(rng: np.random.Generator, vocab_size: int, length: int, temperature: float):
    first = _log_softmax(temperature * rng.standard_normal(vocab_size))
    trans = _log_softmax(temperature * rng.standard_normal((length - 1, vocab_size, vocab_size)))
    return first, trans


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@jax.jit
def bigram_prefix_table(first: Array, transitions: Array) -> Array:
    """The full-prefix table ``[M, V]`` of a position-dependent bigram (rows repeat per last token).

    ``first`` ``[V]`` and ``transitions`` ``[L-1, V, V]`` are logits or log-probabilities; the
    rows are returned as given (apply ``log_softmax`` to normalise).
    """
    v = first.shape[-1]
    rows = [first[None, :]]
    for t in range(1, transitions.shape[0] + 1):
        last = jnp.arange(v**t) % v  # the last token of each prefix of length t
        rows.append(transitions[t - 1][last])
    return jnp.concatenate(rows, axis=0)


@jax.jit
def base_prefix_log_probs(lm: ToyLM) -> Array:
    """The base model as a full-prefix table ``[M, V]`` of next-token log-probabilities."""
    return bigram_prefix_table(lm.first, lm.transitions)


@jax.jit
def sequence_log_probs(prefix_log_probs: Array) -> Array:
    r"""Log-probabilities ``[S]`` of every sequence from a prefix table ``[M, V]`` (the chain rule).

    .. math:: \log \pi(y) = \sum_t \log \pi(y_t \mid y_{<t})

    computed level by level (``O(S)``, no gather): the ``V^t`` prefix log-probabilities are
    broadcast against their ``[V^t, V]`` rows.

    Examples:
      >>> lm = toy_lm(0, 3, 4)
      >>> lp = sequence_log_probs(base_prefix_log_probs(lm))
      >>> lp.shape, round(float(jax.nn.logsumexp(lp)), 6)
      ((81,), 0.0)
    """
    m, v = prefix_log_probs.shape
    length = shape_of(m * (v - 1) + 1, v)
    off = prefix_offsets(v, length)
    logp = jnp.zeros((1,), prefix_log_probs.dtype)
    for t in range(length):
        level = prefix_log_probs[off[t] : off[t + 1]]
        logp = (logp[:, None] + level).reshape(-1)
    return logp


@jax.jit
def tilted_prefix_log_probs(prefix_log_probs: Array, rewards: Array, beta) -> tuple[Array, Array]:
    r"""The tilted policy ``pi0 exp(r/beta)/Z`` as a prefix table, and ``log Z`` (MATH.md §2).

    Backward recursion on the soft values ``W``:

    .. math::

       W_L(y) = r(y)/\beta, \qquad
       W_t(y_{<t}) = \log \sum_v \pi_0(v \mid y_{<t}) e^{W_{t+1}(y_{<t} v)}, \qquad
       \pi_\beta(v \mid y_{<t}) = \pi_0(v \mid y_{<t}) e^{W_{t+1}(y_{<t} v) - W_t(y_{<t})},

    and ``log Z = W_0``. Every step is a log-sum-exp.

    Args:
      prefix_log_probs: ``[M, V]`` base next-token log-probabilities.
      rewards: ``[S]`` rewards of the sequences.
      beta: the KL penalty, ``> 0``.

    Returns:
      ``(table [M, V], log_z)``.

    Examples:
      >>> lm = toy_lm(0, 3, 4)
      >>> lp0 = base_prefix_log_probs(lm)
      >>> r = jnp.arange(81.0) / 81
      >>> table, log_z = tilted_prefix_log_probs(lp0, r, 0.5)
      >>> direct = jax.nn.log_softmax(sequence_log_probs(lp0) + r / 0.5)
      >>> bool(jnp.allclose(sequence_log_probs(table), direct, atol=1e-5))
      True
    """
    m, v = prefix_log_probs.shape
    length = shape_of(rewards.shape[0], v)
    off = prefix_offsets(v, length)
    w = rewards / beta
    levels = []
    for t in range(length - 1, -1, -1):
        q = prefix_log_probs[off[t] : off[t + 1]] + w.reshape(-1, v)
        w = jax.nn.logsumexp(q, axis=-1)
        levels.append(q - w[:, None])
    return jnp.concatenate(levels[::-1], axis=0), w[0]


@functools.partial(jax.jit, static_argnames=("num",))
def sample_sequences(key: Array, prefix_log_probs: Array, num: int) -> Array:
    """``num`` sequences ``[num, L]`` drawn token by token from a prefix table ``[M, V]``."""
    m, v = prefix_log_probs.shape
    length = shape_of(m * (v - 1) + 1, v)
    off = prefix_offsets(v, length)
    code = jnp.zeros((num,), jnp.int32)
    toks = []
    for t, k in enumerate(jax.random.split(key, length)):
        tok = jax.random.categorical(k, prefix_log_probs[off[t] + code], axis=-1).astype(jnp.int32)
        toks.append(tok)
        code = code * v + tok
    return jnp.stack(toks, axis=-1)


class Rewards(NamedTuple):
    """Reward tables ``[S]`` over the enumerated sequences, in units of the gold reward's base std.

    Attributes:
      gold: the reward alignment is measured with: ``additive + pair + motif`` (centred and scaled
        to mean 0, standard deviation 1 under ``pi0``). Not token-additive (the motif bonus
        depends on the whole sequence), so a bigram policy cannot represent its tilt.
      additive: the token-additive part ``sum_t a_t(y_t)`` alone (same scale; its tilt of the
        bigram base is again a position-dependent bigram).
      spurious: a proxy, ``gold + b * #{t : y_t = k}``: a bonus for a spurious token ``k``
        (structured, token-additive error).
      noisy: a proxy, ``gold + sigma * eps(y)`` with i.i.d. standard normal ``eps`` per sequence
        (unstructured, non-additive error).
    """

    gold: Array
    additive: Array
    spurious: Array
    noisy: Array


class Testbed(NamedTuple):
    """The base model, its exact law over sequences, and the reward tables.

    Attributes:
      lm: the :class:`ToyLM`.
      prefix_log_probs: ``[M, V]`` base next-token log-probabilities (full-prefix table).
      log_probs: ``[S]`` base log-probabilities of every sequence.
      rewards: :class:`Rewards`, each ``[S]``.
      spurious_token: the token ``k`` the spurious proxy rewards.
      motif: the token pattern whose presence (anywhere) earns the gold motif bonus.
    """

    lm: ToyLM
    prefix_log_probs: Array
    log_probs: Array
    rewards: Rewards
    spurious_token: int
    motif: tuple[int, ...]

    __test__ = False  # not a pytest test class

    @property
    def vocab_size(self) -> int:
        return self.lm.vocab_size

    @property
    def length(self) -> int:
        return self.lm.length


def make_testbed(
    seed: int = 0,
    vocab_size: int = 4,
    length: int = 5,
    *,
    temperature: float = 1.0,
    pair_scale: float = 0.5,
    motif_length: int = 2,
    motif_bonus: float = 2.0,
    spurious_bonus: float = 0.5,
    noise: float = 0.5,
    dtype=None,
) -> Testbed:
    r"""A seeded toy LM with a gold reward and two proxies, all enumerated.

    Before standardisation the gold reward is

    .. math::

       g(y) = \sum_t a_t(y_t) + c \sum_{t \ge 1} b(y_{t-1}, y_t) + B\,[\text{motif occurs in } y],

    with ``a, b`` standard normal (``c = pair_scale``, ``B = motif_bonus`` in units of the std of the
    additive part), then ``gold = (g - E_0 g) / sd_0(g)``. The proxies add ``spurious_bonus`` per
    occurrence of a spurious token, or ``noise`` times i.i.d. normal noise (:class:`Rewards`).

    Args:
      seed: seeds the base model, the rewards, the motif and the spurious token.
      vocab_size, length: ``V`` and ``L`` (``V^L`` at most ``MAX_SEQUENCES``).
      temperature: peakedness of the base model (:func:`toy_lm`).
      pair_scale, motif_length, motif_bonus, spurious_bonus, noise: the reward's structure.
      dtype: float dtype of every table.

    Examples:
      >>> tb = make_testbed(0, vocab_size=3, length=4)
      >>> tb.log_probs.shape, tb.prefix_log_probs.shape
      ((81,), (40, 3))
      >>> p = jnp.exp(tb.log_probs)
      >>> abs(float(p @ tb.rewards.gold)) < 1e-6, round(float(p @ tb.rewards.gold**2), 6)
      (True, 1.0)
    """
    _check_sizes(vocab_size, length)
    if not 1 <= motif_length <= length:
        raise ValueError(f"motif_length must be between 1 and length={length}, got {motif_length}")
    dtype = jnp.result_type(float) if dtype is None else dtype
    rng = np.random.default_rng(seed)
    first, trans = _toy_lm_np(rng, vocab_size, length, temperature)
    a = rng.standard_normal((length, vocab_size))
    b = rng.standard_normal((vocab_size, vocab_size))
    motif = tuple(int(x) for x in rng.integers(0, vocab_size, motif_length))
    noise_draws = rng.standard_normal(vocab_size**length)
    spurious_token = int(np.argmin(a.sum(axis=0)))  # the token the gold reward likes least

    # Built in float64 NumPy (construction only), then cast.
    lp0 = np.zeros(1)
    for t in range(length):
        level = first[None, :] if t == 0 else trans[t - 1][np.arange(vocab_size**t) % vocab_size]
        lp0 = (lp0[:, None] + level).reshape(-1)
    p = np.exp(lp0)
    seqs = sequences(vocab_size, length)
    additive = a[np.arange(length), seqs].sum(axis=-1)
    sd_add = np.sqrt(p @ (additive - p @ additive) ** 2)
    pair = b[seqs[:, :-1], seqs[:, 1:]].sum(axis=-1) if length > 1 else np.zeros_like(additive)
    k = motif_length
    has_motif = np.zeros(len(seqs), bool)
    for i in range(length - k + 1):
        has_motif |= np.all(seqs[:, i : i + k] == np.asarray(motif), axis=-1)
    g = additive + pair_scale * pair + motif_bonus * sd_add * has_motif
    mean, sd = p @ g, np.sqrt(p @ (g - p @ g) ** 2)
    gold = (g - mean) / sd
    additive = (additive - p @ additive) / sd
    spurious = gold + spurious_bonus * (seqs == spurious_token).sum(axis=-1)
    noisy = gold + noise * noise_draws
    cast = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    lm = ToyLM(cast(first), cast(trans))
    rewards = Rewards(cast(gold), cast(additive), cast(spurious), cast(noisy))
    return Testbed(lm, base_prefix_log_probs(lm), cast(lp0), rewards, spurious_token, motif)
