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
