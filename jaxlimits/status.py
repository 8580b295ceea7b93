"""One vocabulary for what each output row is: the same words in the printed table, CSV and JSON.

Every row a command prints or writes carries ``status`` (one word below) and ``reason`` (a
sentence; empty when the status says all). A value that is not known is left empty (``null`` in
JSON, an empty cell in CSV), never written as a number, and its row's status says why. A
module that finds a new reason to distrust or withhold a value registers a word with
:func:`register`; the tables' legends then explain it like the others.
"""

from __future__ import annotations

#: Word -> what it means, for people (tables print the words that appear, with these meanings).
VOCABULARY: dict[str, str] = {
    "ok": "computed, and the samples support it",
    "saturated": "computed, but the trust rule flags it; the reasons say why: bias (the estimated bias is large "
                 "beside the SE), tail (heavy-tailed weights, PSIS k-hat), no-tilt (k-hat >= 1: the tilt may not "
                 "exist), ceiling (KL near what the samples show), few (too few or too uneven effective draws)",
    "unknown": "not computable from these samples (e.g. a KL at or beyond what they can show): the value is "
               "left empty; a bound, where one is known, is in its own column",
    "above_frontier": "above the frontier by more than its uncertainty: impossible up to estimation error (check "
                      "the KL's unit, the prompts and the reward)",
    "infeasible": "the target cannot be reached by any policy (a gain at or above max r - E_0[r] of an exact law, "
                  "or a negative or NaN target)",
    "not_converged": "the solver reached its iteration cap (or its correction passes) before its tolerance",
    "extrapolated": "past what the samples show: from a generalised Pareto model of each prompt's upper reward "
                    "tail (--tail gpd), with that model's interval; a model, not a measurement (reasons: no-tilt = "
                    "the fitted tail has no tilt there)",
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
    """``(status, reason)`` of one :class:`jaxlimits.inversion.Status` code and its trust flag.

    A gain at or above the samples' largest is ``unknown`` (a larger reward may exist beyond the
    samples) unless the rows are an exact law, where it is ``infeasible``.
    """
    from .inversion import MESSAGES, Status

    code = int(code)
    if code == Status.OK:
        return ("saturated", "") if saturated else ("ok", "")
    if code == Status.KL_AT_OR_ABOVE_CEILING:
        return "unknown", MESSAGES[code]
    if code == Status.GAIN_AT_OR_ABOVE_MAX:
        return ("infeasible" if exact else "unknown"), MESSAGES[code]
    if code == Status.NOT_CONVERGED:
        return "not_converged", MESSAGES[code]
    if code in (Status.NO_TILT, Status.BEYOND_UPPER_END):  # the tail model's: no answer, not an infeasible target
        return "unknown", MESSAGES[code]
    return "infeasible", MESSAGES[code]
