"""``jaxlimits invert FILE --gain G ... --kl K ...``: the KL a gain needs, the gain a KL budget allows."""

from __future__ import annotations

import sys

import numpy as np

from . import _common as c

EXAMPLES = (
    "jaxlimits invert samples.jsonl --gain 0.1 0.5 --kl 1 2",
    "jaxlimits invert samples.jsonl --kl 0.5 --per-prompt --out budgets.csv",
)

#: Rows of a per-prompt table printed to the terminal (all of them go to --out).
MAX_PRINTED_ROWS = 40


def register(sub):
    p = c.subparser(sub, "invert", "invert the frontier: the least KL for a target gain, the most gain for a KL "
                    "budget. Exit status: 0 when every target is solved; 2 when some are not (the table and --out "
                    "still hold every target, the unsolved ones empty with their status and reason) or on bad input",
                    EXAMPLES)
    c.add_data_options(p)
    p.add_argument("--gain", type=float, nargs="+", default=None, metavar="G",
                   help="target gains (reward units): print the least KL that reaches each")
    p.add_argument("--kl", type=float, nargs="+", default=None, metavar="K",
                   help="KL budgets (nats): print the most gain reachable within each")
    p.add_argument("--per-prompt", action="store_true",
                   help="invert each prompt's frontier (default: the pooled frontier, one beta for all prompts)")
    p.add_argument("--max-iter", type=int, default=None, help="cap on Newton iterations (default 40)")
    c.add_tail(p, "targets past what the samples show (or flagged 'ceiling' there; other flagged answers keep the "
                  "measurement) solved on a generalised Pareto model "
                  "of each prompt's upper reward tail, marked 'extrapolated' with the model's interval "
                  "(README 'Beyond log N'; off by default). Plain samples only: not with --dedupe, log-weight, count "
                  "or score columns")
    c.add_common(p)
    return p


def rows_of(question: str, targets, sol, prompt_ids=None) -> list[dict]:
    """Table rows of a :class:`jaxlimits.inversion.Solution` (one per target, or per prompt and target).

    ``status`` is a word of ``jaxlimits.status.VOCABULARY``, ``reason`` says why (empty when
    solved), ``solver_status`` is the solver's code name (``jaxlimits.status.NAMES``);
    ``gain_lower_bound`` is, for a KL budget at or beyond what the samples can show
    (``KL_AT_OR_ABOVE_CEILING``), the samples' cap ``Solution.gain_max`` (``max r - E_0 r``: best-of-N
    reaches it within that KL, so the frontier there is at least that; as ``compare``'s
    ``frontier_gain_lower_bound``), empty elsewhere (no bound is known for a gain at or above the
    cap, ``GAIN_AT_OR_ABOVE_MAX``). With a tail
    model: ``extrapolated``, the model's interval ``tail_*`` and, on extrapolated rows, the measured
    answer it replaced, ``measured_beta``, ``measured_kl``, ``measured_gain`` (empty where the samples
    gave none), ``measured_status``, ``measured_solver_status`` and ``measured_reasons`` (why it is
    flagged).
    """
    from ..estimators import reason_names
    from ..status import NAMES, of_solution

    fields = ("beta", "kl", "kl_se", "gain", "gain_se")
    reasons = np.asarray(sol.reasons)
    cols = {k: np.asarray(getattr(sol, k), dtype=np.float64) for k in fields}
    status = np.asarray(sol.status)
    sat = np.asarray(sol.saturated)
    iters = np.asarray(sol.iterations)
    cap = np.broadcast_to(np.asarray(sol.gain_max, dtype=np.float64), status.shape)
    rows = []
    index = [(None, j) for j in range(len(targets))] if prompt_ids is None else [
        (i, j) for i in range(len(prompt_ids)) for j in range(len(targets))
    ]
    for i, j in index:
        at = j if i is None else (i, j)
        row = {"question": question}
        if i is not None:
            row["prompt"] = prompt_ids[i]
        row["target"] = float(targets[j])
        row.update({k: float(v[at]) for k, v in cols.items()})
        row["status"], row["reason"] = of_solution(int(status[at]), bool(sat[at]))
        row["solver_status"] = NAMES[int(status[at])]
        row["saturated"] = bool(sat[at])
        row["reasons"] = reason_names(reasons[at])
        past = question == "max_gain_at_kl" and NAMES[int(status[at])] == "KL_AT_OR_ABOVE_CEILING"
        row["gain_lower_bound"] = float(cap[at]) if past and np.isfinite(cap[at]) else None
        row["iterations"] = int(iters[at])
        if sol.tail is not None:  # --tail gpd: the model's answer and interval where it gave the answer
            ext = bool(np.asarray(sol.extrapolated)[at])
            row["extrapolated"] = ext
            for k in ("beta_lo", "beta_hi", "kl_lo", "kl_hi", "gain_lo", "gain_hi", "carried_share"):
                v = float(np.asarray(getattr(sol.tail, k))[at])
                row[f"tail_{k}"] = v if ext and np.isfinite(v) else None
            # what the samples alone said there (flagged, or no answer), beside the model's
            for k in ("beta", "kl", "gain"):
                v = float(np.asarray(getattr(sol.tail, f"measured_{k}"))[at])
                row[f"measured_{k}"] = v if ext and np.isfinite(v) else None
            m_code = int(np.asarray(sol.tail.measured_status)[at])
            row["measured_status"] = of_solution(m_code, True)[0] if ext else None
            row["measured_solver_status"] = NAMES[m_code] if ext else None
            row["measured_reasons"] = reason_names(int(np.asarray(sol.tail.measured_reasons)[at])) if ext else None
        rows.append(row)
    return rows


#: Solver codes of an answer (EXTRAPOLATED: the tail model's, with its interval).
_SOLVED = ("OK", "EXTRAPOLATED")


def _num(x: float, se: float | None = None) -> str:
    if not np.isfinite(x):
        return "inf" if x == np.inf else "-"
    if se is None or se == 0 or not np.isfinite(se):
        return f"{x:.5g}"
    return f"{x:.5g} ± {se:.2g}"


def _measured(r: dict) -> str:
    """The measured answer beside an extrapolated row's model answer: its value and why it is flagged
    (``tail+ess``), or why the samples gave none."""
    answer = "kl" if r["question"] == "min_kl_for_gain" else "gain"
    return c.measured([r[f"measured_{answer}"]], r["measured_reasons"], r["measured_solver_status"].lower())


def print_table(rows: list[dict], per_prompt: bool) -> None:
    head = f"{'prompt':>12} " if per_prompt else ""
    ext = any(r.get("extrapolated") for r in rows)
    b_width = 22 if any(r["solver_status"] == "EXTRAPOLATED" for r in rows) else 11  # room for beta's interval
    c.say(f"{head}{'target':>14} {'beta':>{b_width}} {'KL (nats)':>20} {'gain':>20}  "
          + (f"{'measured (flag)':>26}  " if ext else "") + "status")
    shown = rows[:MAX_PRINTED_ROWS] if per_prompt else rows
    for r in shown:
        unit = "gain" if r["question"] == "min_kl_for_gain" else "KL"
        target = f"{unit} {r['target']:.5g}"
        status = r["status"] if r["solver_status"] in _SOLVED else f"{r['status']}: {r['solver_status'].lower()}"
        status += f" ({r['reasons']})" if r.get("reasons") else ""
        pid = f"{str(r['prompt'])[:12]:>12} " if per_prompt else ""
        kl, gain, beta = _num(r["kl"], r["kl_se"]), _num(r["gain"], r["gain_se"]), _num(r["beta"])
        if r.get("gain_lower_bound") is not None:  # a KL budget past the ceiling: at least the samples' cap
            gain = f"≥ {r['gain_lower_bound']:.4g}"
        if r["solver_status"] == "EXTRAPOLATED":  # the model's interval of the answer and of its beta
            answer = "kl" if unit == "gain" else "gain"
            # a point carried by a few prompts: its interval, not the point
            point = not ("few" in (r.get("reasons") or "").split("+") and r.get("tail_carried_share") is not None)
            text = c.interval(r[answer], r[f"tail_{answer}_lo"], r[f"tail_{answer}_hi"], point=point)
            beta = c.interval(r["beta"], r["tail_beta_lo"], r["tail_beta_hi"], point=point)
            kl, gain = (text, gain) if answer == "kl" else (kl, text)
        measured = (f"{_measured(r) if r.get('extrapolated') else '':>26}  " if ext else "")
        c.say(f"{pid}{target:>14} {beta:>{b_width}} {kl:>20} {gain:>20}  {measured}{status}")
    if len(rows) > len(shown):
        c.say(f"... {len(rows) - len(shown)} more rows (write them all with --out)")


def _failures(question: str, targets, sol, prompt_ids, per_prompt: bool) -> list[str]:
    """One line per target that was not solved, saying why and for which prompts."""
    from ..status import MESSAGES, Status, solved

    option = "--gain" if question == "min_kl_for_gain" else "--kl"
    status = np.asarray(sol.status)
    out = []
    for j, t in enumerate(targets):
        st = status[..., j] if per_prompt else status[j]
        bad = np.flatnonzero(~solved(np.atleast_1d(st)))
        if bad.size == 0:
            continue
        first = int(bad[0])
        code = int(np.atleast_1d(st)[first])
        at = (first, j) if per_prompt else j
        if code == Status.GAIN_AT_OR_ABOVE_MAX:
            limit = f" (here {float(np.asarray(sol.gain_max)[at]):.5g})"
        elif code == Status.KL_AT_OR_ABOVE_CEILING:
            limit = (f" (here K_max = {float(np.asarray(sol.kl_ceiling)[at]):.5g} nats; the frontier there is at "
                     f"least the samples' cap {float(np.asarray(sol.gain_max)[at]):.5g}, gain_lower_bound)")
        else:
            limit = ""
        who = (f"{bad.size} of {len(prompt_ids)} prompts, first {prompt_ids[first]!r}" if per_prompt
               else "the pooled frontier")
        out.append(f"{option} {t:g}: {MESSAGES[code]}{limit} [{who}]")
    return out


def report(samples, args, source: dict, notes: list[str], prompt_ids) -> int:
    import jaxlimits as jl

    if not args.gain and not args.kl:
        raise c.UsageError("give target gains with --gain G [G ...] and/or KL budgets with --kl K [K ...]")
    out = c.check_new_file(args.out, args.force, (".csv", ".json"), "--out")
    per_prompt = bool(args.per_prompt)
    kw = dict(pooled=not per_prompt, throw=False, max_iter=args.max_iter, memory_budget=c.memory_budget(args))
    kw.update(c.tail_options(args))
    ids = list(prompt_ids) if per_prompt else None
    rows, failures, not_applied = [], [], 0
    for question, targets, fn in (("min_kl_for_gain", args.gain, jl.min_kl_for_gain),
                                  ("max_gain_at_kl", args.kl, jl.max_gain_at_kl)):
        if not targets:
            continue
        sol = fn(samples, np.asarray(targets, dtype=np.float64), **kw)
        rows += rows_of(question, targets, sol, ids)
        failures += _failures(question, targets, sol, ids, per_prompt)
        if sol.tail is not None and sol.tail.not_applied is not None:
            not_applied += int(np.sum(np.asarray(sol.tail.not_applied)))
    if not_applied:
        from ..estimators import SHARE_MAX

        why = ("their prompts' top rewards tie" if per_prompt else
               f"more than {SHARE_MAX:.0%} of the prompts have tied top rewards (e.g. rewards rounded to bfloat16)")
        notes.append(f"--tail gpd did not apply to {not_applied} target(s) past what the samples show (or flagged "
                     f"'ceiling' there): {why}, so no tail can be fitted; those rows keep the samples' answer "
                     + ("(`jaxlimits frontier --tail gpd` draws such prompts with their empirical law and flags "
                        "the points `few`)" if per_prompt else
                        "(`jaxlimits frontier --tail gpd` does not apply the model to them either)"))
    for note in notes:
        c.say(f"note: {note}")
    scope = "each prompt's frontier" if per_prompt else "the pooled frontier (one beta for all prompts)"
    c.say(f"{samples.num_prompts} prompts, up to {samples.num_samples} samples each; inverting {scope}")
    print_table(rows, per_prompt)
    c.say(f"gain in {getattr(args, 'reward_col', 'reward')!r} units (the frontier's reward), KL in nats per sequence; "
          "solved on the bias-corrected frontier (README 'Can I trust the number?')")
    from ..status import legend

    carried = [r for r in rows if r.get("extrapolated") and (r.get("tail_carried_share") or 0) > 0
               and "few" in (r.get("reasons") or "").split("+")]
    if carried:
        from ..estimators import SHARE_MAX

        worst = max(r["tail_carried_share"] for r in carried)
        c.say(f"(few on an extrapolated row: the largest {SHARE_MAX:.0%} of the prompts hold up to {worst:.0%} of "
              "the model's pooled KL there, near their fitted critical beta, the model's least certain part: the "
              "table prints its interval only; the point, in --out, is not to be read; tail_carried_share in --out)")
    if any(r.get("extrapolated") for r in rows):
        c.say("(extrapolated: not measured; solved on a model of each prompt's upper reward tail, with its interval "
              "(of beta too) in brackets (the tail_* columns of --out, empty where the data cannot bound it); "
              "'measured (flag)' is "
              "what the samples alone answer there and why it is flagged, or why they give none (the measured_* "
              "columns of --out): README 'Beyond log N')")
    for line in legend(r["status"] for r in rows):
        c.say(line)
    if out is not None:
        c.write_rows(out, rows, c.meta(args, source, notes))
        unsolved = sum(r["solver_status"] not in _SOLVED for r in rows)
        bounded = " (a KL budget past the ceiling: gain_lower_bound)" if any(
            r["gain_lower_bound"] is not None for r in rows) else ""
        solved_rows = len(rows) - unsolved
        c.say(f"wrote {out}" + (f" ({solved_rows} row{'' if solved_rows == 1 else 's'} solved, {unsolved} not: their "
                                f"values are empty{bounded} and their status says why)" if unsolved else ""))
    if failures:  # the solved targets are printed (and written); exit status 2 says some were not
        sys.stderr.write("jaxlimits invert: targets not solved (exit status 2; the others are above):\n  "
                         + "\n  ".join(failures) + "\n")
        return 2
    return 0


def run(args) -> int:
    loaded = c.load_samples(args)
    notes = list(loaded.notes)
    if args.score_col not in (None, args.reward_col):
        notes.append(f"--score-col {args.score_col!r} is not used here: the frontier inverted is that of "
                     f"{args.reward_col!r} (gains in {args.reward_col!r} units)")
    return report(loaded.samples, args, loaded.source, notes, loaded.prompt_ids)
