r"""Runs as trainers log them: TRL, verl, OpenRLHF and Weights & Biases logs, read into :class:`Run`\ s.

A training log is one row per logging step; each row with a KL and a reward is one checkpoint
on the KL-reward plane. What the logged number *means* differs between trainers, and this module
keeps that meaning as data (:class:`Schema`): which key holds the KL, in which unit (the mean per
completion token, or the sum over a completion's tokens), with which estimator (``k1 = log pi -
log pi_ref``; ``k3 = (rho - 1) - log rho`` with ``rho = pi_ref / pi``; either clamped), against
which policy (the reference, or the policy before the update), and whether the logged reward is
taken before or after the KL penalty.

The frontier is in nats **per sequence**; a per-token mean is converted with the mean completion
length logged in the same row (:func:`jaxlimits.compare.sequence_kl`), which is exact for a
token-weighted mean over the batch (TRL) and an approximation for a mean of per-sequence means
(verl, OpenRLHF). Every assumption is returned as a note.

Key names were checked against the trainers' own sources (see :data:`SCHEMAS`, each with its
``source``); the W&B forms of the same keys carry the ``train/`` prefix that transformers'
``WandbCallback`` adds to training logs.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from .compare import Run, check_run
from .io import DataError

#: Containers ``--runs-format`` can force.
FORMATS = ("auto", "trl", "verl", "wandb-csv", "table")


class Schema(NamedTuple):
    """What a trainer's log keys mean (one row of the README's table).

    Attributes:
      name: the ``--trainer`` name. label: the trainer, for people.
      kl_keys: keys of the KL to the reference, in order of preference.
      kl_unit: ``"token"`` (a mean per completion token) or ``"sequence"`` (a sum over tokens).
      kl_estimator: how each token's KL is estimated, in words.
      kl_reduction: how the per-token values are averaged into the logged number.
      reward_keys: keys of the mean reward **before** the KL penalty, in order of preference
        (a key ending in ``/*/mean`` sums every matching key: one per reward function).
      reward_after: keys of the reward after the KL penalty (never used as the gain).
      length_keys: keys of the mean completion length in tokens (for a per-token KL).
      step_keys: keys naming the step. never: keys that are **not** the KL to the reference,
        with why. no_kl: what to do when the log has no KL. source: where the keys were checked.
    """

    name: str
    label: str
    kl_keys: tuple[str, ...]
    kl_unit: str
    kl_estimator: str
    kl_reduction: str
    reward_keys: tuple[str, ...]
    reward_after: tuple[str, ...]
    length_keys: tuple[str, ...]
    step_keys: tuple[str, ...]
    never: Mapping[str, str]
    no_kl: str
    source: str


_MEASURE = ("measure it from the policy's own samples instead: jaxlimits compare BASE --policy-samples FILE "
            "(sequence log-probabilities under the policy and the reference)")

#: The trainers whose logs are read, by ``--trainer`` name.
SCHEMAS: dict[str, Schema] = {s.name: s for s in (
    # trl/trainer/grpo_trainer.py: per_token_kl = exp(ref - logp) - (ref - logp) - 1 (k3); logged as
    # self._metrics[mode]["kl"] = (per_token_kl * mask).sum() / mask.sum() only `if self.beta != 0.0`
    # (GRPOConfig.beta defaults to 0.0: "the reference model is not loaded"); "reward" is the weighted
    # sum of the reward functions (the KL is in the loss, not the reward); "completions/mean_length" is
    # the mean number of completion tokens of the same generation batch (older TRL: "completion_length").
    Schema(
        "trl-grpo", "TRL GRPOTrainer", ("kl",), "token",
        "k3 = exp(d) - d - 1, d = log pi_ref - log pi (>= 0 per token), KL to the reference",
        "token-weighted mean over the batch's completion tokens",
        ("reward",), (), ("completions/mean_length", "completion_length"), ("step",),
        {"clip_ratio": "the fraction of clipped tokens"},
        "GRPO logs `kl` only when its KL coefficient beta is non-zero (TRL's default is 0.0, and then the "
        f"run is not KL-regularised at all): {_MEASURE}",
        "huggingface/trl trl/trainer/grpo_trainer.py (_compute_loss, _generate_and_score_completions, log)",
    ),
    # trl/trainer/rloo_trainer.py: per_token_kl = old_per_token_logps - ref_per_token_logps (k1);
    # rewards = rewards - beta * (per_token_kl * mask).sum(-1) BEFORE "reward" is logged, so "reward"
    # is after the penalty; "rewards/<func>/mean" are the raw reward functions; "kl" is logged as
    # (per_token_kl * mask).sum() / mask.sum(), a per-token mean.
    Schema(
        "trl-rloo", "TRL RLOOTrainer", ("kl",), "token",
        "k1 = log pi_old - log pi_ref, KL to the reference",
        "token-weighted mean over the batch's completion tokens",
        ("rewards/*/mean",), ("reward",), ("completions/mean_length",), ("step",), {},
        f"RLOO logs `kl` only when beta is non-zero: {_MEASURE}",
        "huggingface/trl trl/trainer/rloo_trainer.py (_generate_and_score_completions)",
    ),
    # trl/trainer/ppo_trainer.py (TRL >= 0.12): kl = -logr (k1, default) or (exp(logr) - 1) - logr
    # (kl_estimator="k3"), logr = ref_logprobs - logprobs; "objective/kl" = kl.sum(1).mean();
    # "objective/scores" = scores.mean() (the reward model); "objective/rlhf_reward" = scores + the
    # KL penalty (non_score_reward).
    Schema(
        "trl-ppo", "TRL PPOTrainer", ("objective/kl",), "sequence",
        "k1 = log pi - log pi_ref by default (kl_estimator='k3' if set), KL to the reference",
        "sum over each completion's tokens, mean over completions",
        ("objective/scores",), ("objective/rlhf_reward",), (), ("step", "episode"),
        {"policy/approxkl_avg": "the old-vs-new policy KL of one update"},
        f"no `objective/kl` in the log: {_MEASURE}",
        "huggingface/trl trl/trainer/ppo_trainer.py (train: metrics['objective/kl'] = mean_kl)",
    ),
    # TRL <= 0.11 PPOTrainer.record_step_stats: kl_list = ((logprobs - ref_logprobs) * mask).sum(-1);
    # "objective/kl" = kl_list.mean(); log_stats adds "env/reward_mean" = mean of the scores passed to
    # step() (before the KL penalty; "ppo/mean_scores" is the same scores).
    Schema(
        "trl-ppo-legacy", "TRL PPOTrainer (<= 0.11, logged through accelerate/W&B)", ("objective/kl",),
        "sequence", "k1 = log pi - log pi_ref, KL to the reference",
        "sum over each completion's tokens, mean over completions",
        ("env/reward_mean", "ppo/mean_scores"), (), ("tokens/responses_len_mean",), ("step", "_step", "Step"),
        {"ppo/policy/approxkl": "the old-vs-new policy KL (k2)", "ppo/policy/policykl": "the old-vs-new KL (k1)"},
        f"no `objective/kl` in the log: {_MEASURE}",
        "huggingface/trl trl/trainer/ppo_trainer.py (record_step_stats, log_stats; TRL <= 0.11)",
    ),
    # verl/trainer/ppo/ray_trainer.py apply_kl_penalty: current_kl = masked_mean(kld, mask, axis=-1)
    # then torch.mean over sequences -> "actor/reward_kl_penalty" (only with algorithm.use_kl_in_reward);
    # workers/actor: "actor/kl_loss" = agg_loss(kld, mask, loss_agg_mode) (only with
    # actor.use_kl_loss; default kl_loss_type "low_var_kl" = k3 clamped to [-10, 10]);
    # metric_utils.compute_data_metrics: "critic/score/mean" = mean of token_level_scores.sum(-1)
    # (before the penalty), "critic/rewards/mean" = token_level_rewards.sum(-1) (after);
    # "response_length/mean". "actor/ppo_kl" is the clipped-objective KL between the rollout policy
    # and the updated one. The file logger writes {"step": step, "data": {...}} per line.
    Schema(
        "verl", "verl (PPO/GRPO trainer)", ("actor/reward_kl_penalty", "actor/kl_loss"), "token",
        "algorithm.kl_penalty (default 'kl' = k1) for actor/reward_kl_penalty; actor.kl_loss_type "
        "(default 'low_var_kl' = k3 clamped to [-10, 10]) for actor/kl_loss; KL to the reference",
        "mean over completions of each completion's per-token mean (actor/kl_loss: per loss_agg_mode, "
        "default token-mean)",
        ("critic/score/mean",), ("critic/rewards/mean",), ("response_length/mean",), ("step",),
        {"actor/ppo_kl": "the KL between the rollout policy and the updated one (old vs new), NOT the KL "
                         "to the reference"},
        "verl logs the KL to the reference only with algorithm.use_kl_in_reward=True "
        "(actor/reward_kl_penalty) or actor.use_kl_loss=True (actor/kl_loss); actor/ppo_kl is the "
        f"old-vs-new policy KL and is never used: {_MEASURE}",
        "volcengine/verl verl/trainer/ppo/ray_trainer.py (apply_kl_penalty), metric_utils.py, "
        "workers/actor (kl_loss), utils/tracking.py (file logger)",
    ),
    # openrlhf/trainer/ppo_utils/experience_maker.py: kl = compute_approx_kl(...) (k1 default,
    # --kl_estimator k2/k3; every estimator clamped to [-10, 10] per token); info["kl"] =
    # masked_mean(kl, action_mask, dim=-1) per sequence; info["reward"] = the reward model's score;
    # info["response_length"]; the trainer logs {"train/<k>": v, "train/global_step": step} to W&B.
    Schema(
        "openrlhf", "OpenRLHF (PPO/REINFORCE++/GRPO)", ("train/kl",), "token",
        "k1 = log pi - log pi_ref by default (--kl_estimator), clamped to [-10, 10] per token, KL to the "
        "reference", "mean over completions of each completion's per-token mean",
        ("train/reward",), (), ("train/response_length",), ("train/global_step", "_step", "Step"), {},
        f"no `train/kl` in the log (OpenRLHF computes it with a reference model only): {_MEASURE}",
        "OpenRLHF/OpenRLHF openrlhf/models/utils.py (compute_approx_kl), trainer/ppo_utils/experience_maker.py",
    ),
)}

#: KL keys whose logged value depends on settings the log does not record: said when used.
_CAUTIONS = {
    "actor/kl_loss": "actor/kl_loss is the loss term as aggregated by actor.loss_agg_mode (token-mean by default), "
                     "and some verl versions log it scaled by the micro-batch factor (1 / gradient-accumulation "
                     "steps): prefer algorithm.use_kl_in_reward (actor/reward_kl_penalty), or measure from samples",
}

#: Keys of the final summary row the transformers Trainer appends to ``log_history``.
_SUMMARY_KEYS = ("train_runtime", "train_loss", "total_flos", "train_samples_per_second")


@dataclass(frozen=True)
class LogRow:
    """One logged step: where it is (``file:line``), the W&B run it belongs to, its values."""

    where: str
    run: str | None
    values: dict[str, Any]


class UnknownTrainerError(ValueError):
    """A log whose keys match no trainer this module knows (the message lists them)."""


# ------------------------------------------------------------------------------------------------
# Containers


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:line {e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text file ({e.reason})") from None


def _read_trl(path: Path) -> list[LogRow]:
    """A transformers ``trainer_state.json`` (its ``log_history``), or that list on its own."""
    doc = _load_json(path)
    history = doc.get("log_history") if isinstance(doc, dict) else doc
    if not isinstance(history, list):
        raise DataError(f"{path}: a trainer_state.json holds a list 'log_history'; this file has none")
    rows = []
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            raise DataError(f"{path}:log_history[{i}]: expected an object, got {type(entry).__name__}")
        rows.append(LogRow(f"{path}:log_history[{i}]", None, entry))
    return rows


def _read_verl(path: Path) -> list[LogRow]:
    """verl's file logger: one ``{"step": ..., "data": {...}}`` a line (a line cut short at the end is an error)."""
    from .io import jsonl_records

    rows = []
    for n, obj in jsonl_records(path):
        data = obj.get("data")
        if not isinstance(data, dict):
            raise DataError(f"{path}:line {n}: a verl file-logger line is {{\"step\": ..., \"data\": {{...}}}}; "
                            f"this one has no 'data' object")
        rows.append(LogRow(f"{path}:line {n}", None, {"step": obj.get("step"), **data}))
    return rows


_WANDB_COL = re.compile(r"^(?P<run>.+?) - (?P<key>.+?)(?P<agg>__MIN|__MAX)?$")


def _read_wandb_csv(paths: Sequence[Path]) -> list[LogRow]:
    """W&B chart exports (``Step``, ``<run> - <metric>``, ``__MIN``/``__MAX``), merged by (run, step)."""
    from .io import csv_records

    merged: dict[tuple[str, str], LogRow] = {}
    for path in paths:
        records = csv_records(path)
        _, header = next(records)
        step_col = header[0]
        cols = []
        for j, name in enumerate(header[1:], start=1):
            m = _WANDB_COL.match(name)
            if m is None:
                raise DataError(f"{path}: column {name!r} is not a W&B export column '<run> - <metric>'")
            if m["agg"] is None:  # __MIN/__MAX are the chart's smoothing band, not values
                cols.append((j, m["run"], m["key"]))
        for n, fields in records:
            step = fields[0]
            for j, run, key in cols:
                if fields[j].strip() == "":
                    continue
                row = merged.setdefault((run, step), LogRow(f"{path}:line {n}", run, {step_col: step}))
                row.values[key] = fields[j]
    return list(merged.values())


def _read_table(path: Path) -> list[LogRow]:
    """Any CSV / JSONL / Parquet table with one logged step a row (a W&B run history, a JSONL log)."""
    from .io import read_table

    table = read_table(path)
    names = list(table.columns)
    return [LogRow(table.where(i), None, {k: table.columns[k][i] for k in names}) for i in range(len(table))]


def _sniff(path: Path) -> str:
    """The container of a file, from its content (the suffix only breaks ties)."""
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(1 << 16)
    except UnicodeDecodeError:
        return "table"  # Parquet and other binary tables
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    text = head.lstrip()
    if text.startswith("["):
        return "trl"  # a log_history list on its own
    if text.startswith("{"):
        try:
            first = json.loads(text.splitlines()[0])
        except json.JSONDecodeError:
            return "trl"  # a multi-line JSON document: trainer_state.json
        if isinstance(first, dict) and isinstance(first.get("data"), dict) and "step" in first:
            return "verl"
        if isinstance(first, dict) and "log_history" in first:
            return "trl"
        return "table"
    header = next(csv.reader([text.splitlines()[0]]), []) if text else []
    if len(header) > 1 and all(_WANDB_COL.match(c) for c in header[1:]):
        return "wandb-csv"
    return "table"


def read_log(paths, fmt: str = "auto") -> tuple[list[LogRow], list[str]]:
    """The rows of one or more training logs, and a note saying how they were read.

    Args:
      paths: a file or a list of files (several only for W&B chart exports, one metric each).
      fmt: one of :data:`FORMATS`; ``"auto"`` detects it from the content.

    Raises:
      DataError: a missing, unreadable or malformed file (naming file and line).
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if fmt not in FORMATS:
        raise ValueError(f"--runs-format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: no such file")
        if p.is_dir():
            raise DataError(f"{p}: is a directory, not a file")
    kinds = [fmt if fmt != "auto" else _sniff(p) for p in paths]
    if len(paths) > 1 and set(kinds) != {"wandb-csv"}:
        raise ValueError("several --runs files are merged only when they are W&B chart exports (one metric each); "
                         f"these were read as {', '.join(kinds)}")
    kind = kinds[0]
    how = "detected" if fmt == "auto" else "as --runs-format says"
    if kind == "wandb-csv":
        rows = _read_wandb_csv(paths)
        runs = sorted({r.run for r in rows})
        note = (f"read {', '.join(map(str, paths))} as W&B chart exports ({how}): {len(runs)} run(s) "
                f"({', '.join(runs[:5])}{', ...' if len(runs) > 5 else ''}), {len(rows)} (run, step) rows; "
                f"__MIN/__MAX columns ignored")
        return rows, [note]
    reader = {"trl": _read_trl, "verl": _read_verl, "table": _read_table}[kind]
    rows = reader(paths[0])
    what = {"trl": "a transformers/TRL trainer_state.json (log_history)", "verl": "a verl file-logger JSONL",
            "table": "a table, one logged step a row"}[kind]
    return rows, [f"read {paths[0]} as {what} ({how}): {len(rows)} rows"]


# ------------------------------------------------------------------------------------------------
# Which trainer, and its keys


def _keys(rows: Sequence[LogRow]) -> set[str]:
    out: set[str] = set()
    for r in rows:
        out.update(r.values)
    return out


def _with_prefix(schema: Schema, prefix: str) -> Schema:
    if not prefix:
        return schema
    add = lambda ks: tuple(prefix + k for k in ks)  # noqa: E731
    return schema._replace(kl_keys=add(schema.kl_keys), reward_keys=add(schema.reward_keys),
                           reward_after=add(schema.reward_after), length_keys=add(schema.length_keys),
                           step_keys=schema.step_keys + add(schema.step_keys) + ("train/global_step", "_step"),
                           never={prefix + k: v for k, v in schema.never.items()})


def _has(keys: set[str], key: str) -> bool:
    if "/*/" in key:
        head, tail = key.split("/*/")
        return any(k.startswith(head + "/") and k.endswith("/" + tail) for k in keys)
    return key in keys


def detect_trainer(rows: Sequence[LogRow], trainer: str = "auto") -> tuple[Schema, list[str]]:
    """The :class:`Schema` of a log, from its keys (or the one ``trainer`` names), with a note.

    TRL logs reach W&B with a ``train/`` prefix (transformers' ``WandbCallback``); both forms are
    recognised. GRPO and RLOO log the same keys: GRPO is assumed, and the note says how to say RLOO.

    Raises:
      ValueError: an unknown trainer name, or keys that match no trainer (listing them).
    """
    keys = _keys(rows)
    if trainer != "auto":
        if trainer not in SCHEMAS:
            raise ValueError(f"--trainer must be one of auto, {', '.join(SCHEMAS)}, got {trainer!r}")
        base = SCHEMAS[trainer]
        wanted = base.kl_keys + base.reward_keys
        bare = any(_has(keys, k) for k in wanted)
        wandb = any(_has(keys, "train/" + k) for k in wanted)
        prefix = "train/" if trainer.startswith("trl") and not bare and wandb else ""
        schema = _with_prefix(base, prefix)
        return schema, [f"trainer: {schema.label} (as --trainer says){' with W&B train/ prefixes' if prefix else ''}"]
    if any(k.startswith(("critic/score/", "actor/", "response_length/")) for k in keys):
        name, prefix, why = "verl", "", "critic/ and actor/ keys"
    elif "train/response_length" in keys or ("train/kl" in keys and "train/global_step" in keys
                                             and "train/completions/mean_length" not in keys):
        name, prefix, why = "openrlhf", "", "train/kl with train/response_length"
    else:
        name = prefix = why = None
        for pre in ("", "train/"):
            if {pre + "env/reward_mean", pre + "ppo/mean_scores"} & keys and pre + "objective/kl" in keys:
                name, prefix, why = "trl-ppo-legacy", pre, "objective/kl with env/reward_mean"
            elif {pre + "objective/kl", pre + "objective/scores"} & keys:
                name, prefix, why = "trl-ppo", pre, "objective/kl, objective/scores"
            elif pre + "reward" in keys and ({pre + "completions/mean_length", pre + "completion_length"} & keys):
                name, prefix, why = "trl-grpo", pre, "kl, reward, completions/mean_length"
            if name:
                break
    if name is None:
        shown = ", ".join(sorted(keys)[:25]) + (", ..." if len(keys) > 25 else "")
        raise UnknownTrainerError(
            f"the log's keys match no trainer this tool knows ({', '.join(SCHEMAS)}); name it with --trainer, or name "
            f"the columns with --run-kl-col and --run-reward-col/--run-gain-col. Keys: {shown}")
    schema = _with_prefix(SCHEMAS[name], prefix)
    notes = [f"trainer: {schema.label} (detected from {why}{', with W&B train/ prefixes' if prefix else ''})"]
    if name == "trl-grpo":
        notes.append("TRL's RLOOTrainer logs the same keys, but its `reward` is after the KL penalty and its KL is k1: "
                     "if this is an RLOO run, say --trainer trl-rloo")
    return schema, notes


# ------------------------------------------------------------------------------------------------
# Rows -> runs


def _number(row: LogRow, key: str):
    """A row's value as a float; None when absent, empty or NaN (TRL writes None when nothing was valid)."""
    v = row.values.get(key)
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, str):
        if v.strip() == "" or v.strip().lower() in ("nan", "none", "null"):
            return None
        try:
            v = float(v)
        except ValueError:
            raise DataError(f"{row.where}: key {key!r} has a non-numeric value {v!r}") from None
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise DataError(f"{row.where}: key {key!r} has a non-numeric value {v!r}") from None
    if math.isnan(v):
        return None
    if not math.isfinite(v):
        raise DataError(f"{row.where}: key {key!r} is {v}, not a finite number")
    return v


def _value(row: LogRow, key: str):
    """Like :func:`_number`; a ``a/*/b`` key sums the matching keys (None if none is present)."""
    if "/*/" not in key:
        return _number(row, key)
    head, tail = key.split("/*/")
    vals = [_number(row, k) for k in sorted(row.values) if k.startswith(head + "/") and k.endswith("/" + tail)]
    vals = [v for v in vals if v is not None]
    return sum(vals) if vals else None


def _first(keys: Sequence[str], present: set[str]) -> str | None:
    return next((k for k in keys if _has(present, k)), None)


def _label(v) -> str:
    """A cell or option value as a label: ``200``, ``200.0`` and ``"200"`` are the same step."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return str(int(f)) if math.isfinite(f) and f == int(f) else str(v)


def _is_summary(row: LogRow) -> bool:
    return any(k in row.values for k in _SUMMARY_KEYS)


def _is_eval(row: LogRow) -> bool:
    metrics = [k for k in row.values if k not in ("step", "epoch", "_step", "Step", "train/global_step")]
    return bool(metrics) and all(k.startswith(("eval_", "eval/")) for k in metrics)


def _where_text(rows: list[LogRow], k: int = 2) -> str:
    return ", ".join(r.where for r in rows[:k]) + (", ..." if len(rows) > k else "")


def runs_from_log(
    paths,
    *,
    baseline: float,
    fmt: str = "auto",
    trainer: str = "auto",
    where: Mapping[str, Sequence[Any]] | None = None,
    negative_tolerance: float | None = None,
) -> tuple[list[Run], list[str]]:
    """Runs (one a logged step with a KL and a reward) from a trainer's log, with what was assumed.

    Rows are filtered (``where``) before anything is converted; the trainer's final summary row,
    evaluation rows and rows without the KL, the reward or (for a per-token KL) the completion
    length are skipped with a note; a per-token KL becomes a :class:`Run` with ``unit="token"`` and
    the row's mean completion length (converted to nats per sequence by :func:`jaxlimits.compare`).

    A batch estimate of the KL can be slightly negative early in training (the k1 estimator's
    sampling noise): values down to ``-negative_tolerance`` nats per sequence (default: 10% of the
    largest sequence KL of the usable rows) are set to 0 with a note; below that is an error.

    Args:
      paths: the log (a list only for several W&B chart exports).
      baseline: the base model's mean reward on the same prompts (``gain = reward - baseline``).
      fmt: one of :data:`FORMATS`. trainer: ``"auto"`` or a key of :data:`SCHEMAS`.
      where: keep only rows whose key has one of the values, e.g. ``{"step": [200, 500]}``
        (``"run"`` is a W&B export's run name).
      negative_tolerance: nats per sequence.

    Returns:
      ``(runs, notes)``.

    Raises:
      DataError: a malformed file or value (naming file and line), a KL negative beyond the tolerance.
      ValueError: unknown keys, no row matching ``where``, or no row with a usable KL (saying what to do).

    Examples:
      >>> import json, tempfile, pathlib
      >>> log = {"log_history": [
      ...     {"step": 10, "kl": 0.002, "reward": 0.5, "completions/mean_length": 150.0},
      ...     {"step": 20, "train_runtime": 9.1, "train_loss": 0.01}]}
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "trainer_state.json"
      >>> _ = path.write_text(json.dumps(log))
      >>> runs, notes = runs_from_log(path, baseline=0.1)
      >>> runs[0].name, runs[0].kl * runs[0].completion_length, round(runs[0].gain, 6)
      ('step 10', 0.3, 0.4)
    """
    rows, notes = read_log(paths, fmt)
    if where:
        wanted = {key: {_label(v) for v in values} for key, values in where.items()}
        keys = _keys(rows) | {"run"}
        for key in wanted:
            if key not in keys:
                raise ValueError(f"--run-where {key}: the log has no key {key!r}")
        rows = [r for r in rows
                if all(_label(r.run if k == "run" else r.values.get(k)) in v for k, v in wanted.items())]
        if not rows:
            raise ValueError(f"no row of the log matches --run-where {dict(where)}")
        notes.append(f"kept {len(rows)} rows matching {dict(where)} (filtered before anything was converted)")
    summary = [r for r in rows if _is_summary(r)]
    evals = [r for r in rows if not _is_summary(r) and _is_eval(r)]
    train = [r for r in rows if not _is_summary(r) and not _is_eval(r)]
    if summary:
        notes.append(f"skipped the trainer's summary row(s) (train_runtime, train_loss): {_where_text(summary)}")
    if evals:
        notes.append(f"skipped {len(evals)} evaluation row(s) (eval_ keys only): {_where_text(evals)}")
    schema, tnotes = detect_trainer(train or rows, trainer)
    notes += tnotes
    present = _keys(train)
    kl_key = _first(schema.kl_keys, present)
    if kl_key is None:
        wrong = [k for k in schema.never if k in present]
        also = f" ({', '.join(f'{k}: {schema.never[k]}' for k in wrong)})" if wrong else ""
        raise ValueError(f"{schema.label}: this log has no KL to the reference ({' or '.join(schema.kl_keys)})"
                         f"{also}. {schema.no_kl}")
    reward_key = _first(schema.reward_keys, present)
    if reward_key is None:
        raise ValueError(f"{schema.label}: this log has no reward before the KL penalty "
                         f"({' or '.join(schema.reward_keys)})")
    length_key = _first(schema.length_keys, present) if schema.kl_unit == "token" else None
    if schema.kl_unit == "token" and length_key is None:
        raise ValueError(f"{schema.label}: the KL {kl_key!r} is a per-token mean and the log has no mean completion "
                         f"length ({' or '.join(schema.length_keys)}) to make it per sequence; {_MEASURE}")
    step_key = _first(schema.step_keys + ("Step", "_step"), present)

    usable, missing = [], {}
    for r in train:
        vals = {"kl": _value(r, kl_key), "reward": _value(r, reward_key)}
        if length_key:
            vals["length"] = _value(r, length_key)
        lacking = [k for k, v in vals.items() if v is None]
        if lacking:
            missing.setdefault(", ".join(lacking), []).append(r)
            continue
        if length_key and vals["length"] <= 0:
            raise DataError(f"{r.where}: {length_key!r} = {vals['length']} is not a positive number of tokens")
        usable.append((r, vals))
    for what, rs in missing.items():
        notes.append(f"skipped {len(rs)} row(s) without {what}: {_where_text(rs)}")
    if not usable:
        raise ValueError(f"{schema.label}: no row has the KL ({kl_key}), the reward ({reward_key})"
                         f"{f' and the length ({length_key})' if length_key else ''} together. {schema.no_kl}")

    seq = [v["kl"] * (v["length"] if length_key else 1.0) for _, v in usable]
    top = max(seq)
    tol = float(negative_tolerance) if negative_tolerance is not None else 0.1 * max(top, 0.0)
    clipped = []
    for (r, v), s in zip(usable, seq):
        if s < -tol:
            raise DataError(
                f"{r.where}: the KL {kl_key!r} = {v['kl']:.4g} ({s:.4g} nats per sequence) is negative beyond the "
                f"estimator's noise (tolerance {tol:.3g} nats; --negative-kl-tolerance sets it): check that the key is "
                f"the KL to the reference")
        if s < 0:
            clipped.append((r, s))
            v["kl"] = 0.0
    if clipped:
        worst = min(clipped, key=lambda t: t[1])
        notes.append(f"{len(clipped)} negative KL(s) within the estimator's noise set to 0 (the most negative: "
                     f"{worst[1]:.3g} nats per sequence at {worst[0].where}; tolerance {tol:.3g} nats)")

    runs = []
    for i, (r, v) in enumerate(usable):
        step = r.values.get(step_key) if step_key else None
        label = f"step {_label(step)}" if step is not None else r.where
        name = f"{r.run} {label}" if r.run else label
        L = v["length"] if length_key else None
        run = Run(name, v["kl"], v["reward"] - float(baseline), None, None, schema.kl_unit, L)  # no SEs in a log
        try:
            check_run(i, run)
        except ValueError as e:
            raise DataError(f"{r.where}: {e}") from None
        runs.append(run)  # its SEs stay None: not given (check_run's copy has 0.0)

    unit = ("per-token mean" if schema.kl_unit == "token" else "per-sequence sum") + f" ({schema.kl_reduction})"
    notes.append(f"KL: {kl_key!r}, {unit}; estimator {schema.kl_estimator}")
    if kl_key in _CAUTIONS:
        notes.append(_CAUTIONS[kl_key])
    for k in schema.never:
        if k in present:
            notes.append(f"not used as the KL: {k!r} ({schema.never[k]})")
    if length_key:
        exact = "exact" if schema.kl_reduction.startswith("token-weighted") else \
            "exact only if the per-token KL does not vary with the completion's length"
        notes.append(f"per-token KL x {length_key!r} (the same row's mean completion length) = nats per sequence "
                     f"({exact})")
    after = _first(schema.reward_after, present)
    not_after = f" (not {after!r}, which is after it)" if after else ""
    notes.append(f"reward: {reward_key!r}, before the KL penalty{not_after}; gain = reward - baseline, baseline "
                 f"{float(baseline):.6g} (the base model's mean reward: assumes the same reward model, and training "
                 f"prompts like the base prompts)")
    if "/*/" in reward_key:
        notes.append(f"{reward_key!r} sums the reward functions' means: assumes their weights are 1 (TRL's default)")
    notes.append("no standard errors in a training log: each point is one batch's estimate; for a run's honest "
                 f"position, {_MEASURE.split(': ', 1)[1]}")
    return runs, notes
