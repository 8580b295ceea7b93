"""One vocabulary for what each output row is, and the one result code of every solver.

:class:`Status` is the code a solve returns as data (the inversions, the over-optimisation
peak, best-of-n's frontier), with :data:`NAMES` and :data:`MESSAGES`; the words below are what
a printed or written row says about itself.

Every row a command prints or writes carries ``status`` (one word below) and ``reason`` (a
sentence; empty when the status says all). A value that is not known is left empty (``null`` in
JSON, an empty cell in CSV), never written as a number, and its row's status says why. A
module that finds a new reason to distrust or withhold a value registers a word with
:func:`register`; the tables' legends then explain it like the others.
"""

from __future__ import annotations

import enum

import numpy as np


class Status(enum.IntEnum):
    """The one result code of every solve: the inversions, the over-optimisation peak, best-of-n's frontier.

    Arrays of results hold these codes as ``int32`` (``Solution.status``, ``Peak.status``,
    ``BestOfN.frontier_status``); :data:`NAMES` and :data:`MESSAGES` (or ``.message``) spell them.
    ``OK`` is a solved target or a found peak; ``NOT_COMPUTED`` a value that was not asked for
    (best-of-n with ``frontier=False``). The ``PEAK_*`` codes say why there is no peak; ``NO_TILT``
    and ``BEYOND_UPPER_END`` why the tail model (``tail="gpd"``) gives no answer; ``EXTRAPOLATED``
    a target solved on that model, past what the samples show (an answer, but a model's:
    :func:`solved` counts it with ``OK``).
    """

    NOT_COMPUTED = -1
    OK = 0
    #: The target gain is at or above ``max r - E_0[r]``, the most any policy can gain.
    GAIN_AT_OR_ABOVE_MAX = 1
    #: The KL budget is at or above what the samples can show (``K_max``): saturated.
    KL_AT_OR_ABOVE_CEILING = 2
    #: The target is negative.
    NEGATIVE_TARGET = 3
    #: The target is NaN.
    NAN_TARGET = 4
    #: The iteration cap was reached before the tolerance (or the bias-corrected curve still
    #: missed the target by more than ``correction_rtol`` after the correction's passes).
    NOT_CONVERGED = 5
    #: The gold gain is still rising at the smallest beta of the grid (no over-optimisation in range).
    PEAK_BEYOND_GRID = 6
    #: The gold gain is largest at the largest beta of the grid: it falls from the start.
    PEAK_AT_START = 7
    #: The gold gain does not change with beta (the proxy carries no information about gold).
    PEAK_FLAT = 8
    #: The grid maximum could not be bracketed by a sign change of ``Cov_beta(s, r)``.
    PEAK_NOT_BRACKETED = 9
    #: ``tail="gpd"``: past what the samples show, the fitted tail model has no tilt (``xi > 0``).
    NO_TILT = 10
    #: ``tail="gpd"``: the target is at or above the most the fitted tail model reaches (its upper end).
    BEYOND_UPPER_END = 11
    #: ``tail="gpd"``: solved on the fitted tail model, past what the samples show (its interval is in
    #: ``Solution.tail``): an answer, but a model's, not a measurement.
    EXTRAPOLATED = 12

    @property
    def message(self) -> str:
        """A sentence for people (:data:`MESSAGES`)."""
        return MESSAGES[self.value]


#: Code -> name, e.g. ``NAMES[2] == "KL_AT_OR_ABOVE_CEILING"``.
NAMES: dict[int, str] = {s.value: s.name for s in Status}

#: Code -> a sentence for people.
MESSAGES: dict[int, str] = {
    Status.NOT_COMPUTED: "not computed",
    Status.OK: "solved",
    Status.GAIN_AT_OR_ABOVE_MAX: ("the target gain is at or above the largest gain the samples can show, "
                                  "max r - E_0[r] (all mass on the best sample seen)"),
    Status.KL_AT_OR_ABOVE_CEILING: (
        "the KL budget is at or above what the samples can show (K_max = -log of the base mass tied at "
        "the maximal reward, log(N/m) for m of N plain samples): saturated, no estimate"
    ),
    Status.NEGATIVE_TARGET: "the target is negative",
    Status.NAN_TARGET: "the target is NaN",
    Status.NOT_CONVERGED: "the solver reached its iteration cap (or its correction passes) before its tolerance",
    Status.PEAK_BEYOND_GRID: "no over-optimisation within the grid: the gold gain still rises at the smallest beta",
    Status.PEAK_AT_START: "the gold gain falls from the start: its maximum is at or above the largest beta",
    Status.PEAK_FLAT: "the gold gain does not change with beta",
    Status.PEAK_NOT_BRACKETED: "the grid maximum is not bracketed by a sign change of Cov(s, r); refine the grid",
    Status.NO_TILT: ("past what the samples show, the fitted tail model has no tilt (a polynomial upper tail, "
                     "xi > 0): the frontier there is degenerate, no answer"),
    Status.BEYOND_UPPER_END: ("the target is at or above the most the fitted tail model reaches (the gain "
                              "saturates at its fitted upper end of the reward): no answer"),
    Status.EXTRAPOLATED: ("past what the samples show: solved on the fitted tail model; its interval is in "
                          "Solution.tail, a model, not a measurement"),
}


def solved(status):
    """True where a code is an answer: ``OK`` or ``EXTRAPOLATED`` (a NumPy bool array of its shape)."""
    status = np.asarray(status)
    return (status == Status.OK) | (status == Status.EXTRAPOLATED)

#: Word -> what it means, for people (tables print the words that appear, with these meanings).
VOCABULARY: dict[str, str] = {
    "ok": "computed, and the samples support it",
    "saturated": "computed, but the trust rule flags it; the reasons say why: bias (the estimated bias is large "
                 "beside the SE), tail (rewards heavier-tailed than exponential, or heavy-tailed weights by PSIS "
                 "k-hat), no-tilt (k-hat >= 1: the tilt may not exist), ceiling (KL near what the samples show), "
                 "few (too few or too uneven effective draws)",
    "unknown": "not computable from these samples (e.g. a KL at or beyond what they can show): the value is "
               "left empty; where a bound is known it is printed as one (≥, ≤)",
    "above_frontier": "above the frontier by more than its uncertainty: impossible up to estimation error (check "
                      "the KL's unit, the prompts and the reward)",
    "infeasible": "the target cannot be reached by any policy (a gain at or above max r - E_0[r] of an exact law, "
                  "or a negative or NaN target)",
    "not_converged": "the solver reached its iteration cap (or its correction passes) before its tolerance",
    "extrapolated": "past what the samples show: from a generalised Pareto model of each prompt's upper reward "
                    "tail (--tail gpd), with that model's interval; a model, not a measurement (the model's "
                    "reasons: no-tilt = the fitted tail has no tilt there; few = too many prompts' top rewards "
                    "tie to fit a tail, or a pooled point rests on at most 5% of the prompts' tails; a measured "
                    "value's reasons are the trust rule's)",
}


def register(word: str, meaning: str) -> str:
    """Adds a status word (lower case, no spaces); returns it. Re-registering the same meaning is a no-op.

    Raises:
      ValueError: a malformed word, or a word already registered with another meaning.
    """
    if not word or word != word.lower() or not word.replace("_", "").isalnum():
        raise ValueError(f"a status word is lower case letters, digits and '_', got {word!r}")
    if VOCABULARY.get(word, meaning) != meaning:
        raise ValueError(f"status {word!r} is already registered as {VOCABULARY[word]!r}")
    VOCABULARY[word] = meaning
    return word


def legend(words) -> list[str]:
    """``"word: meaning"`` for each distinct word in ``words`` (in order of first appearance), except ``ok``."""
    seen = dict.fromkeys(w for w in words if w != "ok")
    return [f"{w}: {VOCABULARY[w]}" for w in seen]


def of_point(saturated: bool) -> str:
    """The status of a computed point (a frontier or curve point) from its trust flag."""
    return "saturated" if bool(saturated) else "ok"


def of_solution(code: int, saturated: bool, exact: bool = False) -> tuple[str, str]:
    """``(status, reason)`` of one :class:`Status` code of a solve and its trust flag.

    A gain at or above the samples' largest is ``unknown`` (a larger reward may exist beyond the
    samples) unless the rows are an exact law, where it is ``infeasible``; a value not computed is
    ``ok`` with the reason saying so.
    """
    code = int(code)
    if code == Status.NOT_COMPUTED:
        return "ok", "no frontier"
    if code == Status.OK:
        return ("saturated", "") if saturated else ("ok", "")
    if code == Status.EXTRAPOLATED:  # the tail model's answer: the word says all
        return "extrapolated", ""
    if code == Status.KL_AT_OR_ABOVE_CEILING:
        return "unknown", MESSAGES[code]
    if code == Status.GAIN_AT_OR_ABOVE_MAX:
        return ("infeasible" if exact else "unknown"), MESSAGES[code]
    if code == Status.NOT_CONVERGED:
        return "not_converged", MESSAGES[code]
    if code in (Status.NO_TILT, Status.BEYOND_UPPER_END):  # the tail model's: no answer, not an infeasible target
        return "unknown", MESSAGES[code]
    return "infeasible", MESSAGES[code]
