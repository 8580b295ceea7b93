"""Built-in synthetic data, generated deterministically (no download, works offline)."""

from __future__ import annotations

import numpy as np

from .samples import Samples


def demo(num_prompts: int = 200, num_samples: int = 512, seed: int = 0, *, gold: bool = False) -> Samples:
    """A deterministic stand-in for reward-model scores of base-model samples.

    Each prompt has its own reward location and spread; rewards are right-skewed (a few
    excellent responses), rounded to bfloat16-like precision (so some tie, as real scores do),
    and carry a gold score (``scores``) that agrees with the reward up to prompt-level noise:
    enough structure to exercise the frontier, best-of-n and proxy analyses.

    Examples:
      >>> from jaxlimits import datasets
      >>> datasets.demo(4, 8).rewards.shape
      (4, 8)
    """
    rng = np.random.default_rng(seed)
    loc = rng.normal(0.0, 1.0, size=(num_prompts, 1))
    scale = rng.uniform(0.5, 1.5, size=(num_prompts, 1))
    z = rng.standard_normal((num_prompts, num_samples))
    rewards = loc + scale * (z + 0.15 * z**2)
    rewards = np.round(rewards * 32) / 32  # coarse precision: ties, as bf16 reward models give
    gold_scores = rewards + rng.normal(0.0, 0.5, size=rewards.shape)
    return Samples(rewards.astype(np.float32), scores=gold_scores.astype(np.float32) if gold else None)


#: The files :func:`write_examples` writes: every file a ``jaxlimits COMMAND --help`` example names.
EXAMPLE_FILES = ("samples.jsonl", "samples.jsonl.gz", "base.jsonl", "gsm8k.jsonl", "alpaca.jsonl", "runs.csv",
                 "train_log.jsonl", "trainer_state.json", "verl_metrics.jsonl", "policy.jsonl")


def write_examples(folder, num_prompts: int = 200, num_samples: int = 512, seed: int = 0, *,
                   force: bool = False) -> list:
    """Writes the files the ``--help`` examples name (:data:`EXAMPLE_FILES`) into ``folder``, from :func:`demo`.

    ``samples.jsonl`` (and its gzip copy) holds :func:`demo`'s rows, one per sample: ``prompt_id``,
    ``reward``, ``gold`` (the gold score), ``response_sha1`` (a stand-in hash, equal for equal
    rewards of a prompt) and ``logprob`` (a stand-in base-model log-probability). The others
    reuse those rewards under the names the examples use (``rm_logit``; ``correct``, a 0/1 gold;
    ``rm``, ``mrm``, ``rm_center``, three proxies of ``gold``), plus runs and training logs of
    the shapes :func:`jaxlimits.runs_from_log` reads. ``jaxlimits demo --write-data FOLDER`` calls it.

    Args:
      folder: an existing folder, or one to create.
      num_prompts, num_samples, seed: as :func:`demo` (best-of-n examples need ``num_samples >= 32``).
      force: overwrite files that exist (else nothing is written when one does).

    Returns:
      The paths written (``pathlib.Path``), in :data:`EXAMPLE_FILES` order.

    Raises:
      FileExistsError: a file exists and ``force`` is False (its name is in the message).
    """
    import gzip
    import hashlib
    import json
    from pathlib import Path

    folder = Path(folder)
    paths = [folder / name for name in EXAMPLE_FILES]
    taken = [p for p in paths if p.exists()]
    if taken and not force:
        raise FileExistsError(f"{taken[0]} exists; pass force=True (--force) to overwrite it")
    folder.mkdir(parents=True, exist_ok=True)
    s = demo(num_prompts, num_samples, seed, gold=True)
    r, g = np.asarray(s.rewards, np.float64), np.asarray(s.scores, np.float64)
    rng = np.random.default_rng(seed + 1)
    logp = -rng.exponential(20.0, r.shape)
    noise = rng.standard_normal((3,) + r.shape)

    def jsonl(name, rows):
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))

    def each():
        for p in range(r.shape[0]):
            for i in range(r.shape[1]):
                yield p, i, round(float(r[p, i]), 5), round(float(g[p, i]), 5)

    samples = [{"prompt_id": p, "reward": x, "gold": y, "logprob": round(float(logp[p, i]), 4),
                "response_sha1": hashlib.sha1(f"{p}:{x}".encode()).hexdigest()[:16]} for p, i, x, y in each()]
    jsonl("samples.jsonl", samples)
    with gzip.open(folder / "samples.jsonl.gz", "wt") as fh:  # compressed, as sample dumps are kept
        fh.write((folder / "samples.jsonl").read_text())
    jsonl("base.jsonl", ({"prompt_id": p, "rm_logit": x} for p, i, x, y in each()))
    jsonl("gsm8k.jsonl", ({"prompt_id": p, "rm_logit": x, "correct": int(y > x + 0.25)} for p, i, x, y in each()))
    jsonl("alpaca.jsonl", ({"prompt_id": p, "gold": y, "rm": round(y + float(noise[0, p, i]), 5),
                            "mrm": round(2 * y + float(noise[1, p, i]), 5),
                            "rm_center": round(y + 2 * float(noise[2, p, i]), 5)} for p, i, x, y in each()))
    (folder / "runs.csv").write_text("name,kl,gain\nppo,0.5,0.4\ngrpo,1.0,0.6\n")
    jsonl("train_log.jsonl", ({"step": 10 * k, "reward_mean": 0.05 * k, "kl": 0.001 * k,
                               "mean_completion_len": 200.0} for k in range(1, 6)))
    history = [{"step": 20 * k, "kl": 0.001 * k, "reward": 0.1 * k, "completions/mean_length": 150.0}
               for k in range(1, 4)]
    (folder / "trainer_state.json").write_text(json.dumps(
        {"log_history": history + [{"step": 60, "train_loss": 0.1, "train_runtime": 9.0}]}))
    verl = {"actor/ppo_kl": 0.01, "response_length/mean": 300.0}
    jsonl("verl_metrics.jsonl", ({"step": k, "data": {"actor/reward_kl_penalty": 0.001 * k,
                                                     "critic/score/mean": 0.1 * k, **verl}} for k in range(1, 4)))
    jsonl("policy.jsonl", ({"prompt_id": p, "rm_logit": round(float(x + 0.2), 5), "logprob": -40.0,
                            "ref_logprob": round(-40.3 - 0.1 * float(noise[0, p, i]), 5)}
                           for p in range(r.shape[0]) for i, x in enumerate(r[p, :16])))
    return paths
