"""An exact testbed: a language model small enough to enumerate, where the frontier is known.

On a toy autoregressive LM over ``V`` tokens and sequences of length ``L`` (``V^L`` up to about
``10^5``), the frontier, best-of-n and trained policies (RLOO, PPO, GRPO) are all computed
**exactly** by enumeration, and the Monte Carlo estimators of :func:`jaxlimits.tilt` can be held
against the truth.

* :mod:`~jaxlimits.testbed.model`: the base model (a position-dependent bigram), prefix tables,
  enumeration, sampling, reward tables (gold and proxies), the tilted policy as a prefix table.
* :mod:`~jaxlimits.testbed.exact`: exact frontier, exact best-of-n, exact points and efficiencies.
* :mod:`~jaxlimits.testbed.algorithms`: RLOO, PPO, GRPO and exact-gradient training with optax.

Examples:
  >>> import jax.numpy as jnp
  >>> from jaxlimits import testbed
  >>> tb = testbed.make_testbed(0, vocab_size=3, length=3)
  >>> f = testbed.exact_frontier(tb.log_probs, tb.rewards.gold, jnp.array([1.0]))
  >>> bool(f.gain[0] > 0)
  True
"""

from .algorithms import ALGORITHMS as ALGORITHMS
from .algorithms import POLICIES as POLICIES
from .algorithms import Hyper as Hyper
from .algorithms import Setup as Setup
from .algorithms import Task as Task
from .algorithms import TrainResult as TrainResult
from .algorithms import init_params as init_params
from .algorithms import make_task as make_task
from .algorithms import policy_table as policy_table
from .algorithms import sweep as sweep
from .algorithms import train as train
from .exact import Efficiency as Efficiency
from .exact import ExactFrontier as ExactFrontier
from .exact import ExactPoint as ExactPoint
from .exact import as_law as as_law
from .exact import bon_log_probs as bon_log_probs
from .exact import bon_point as bon_point
from .exact import draw_samples as draw_samples
from .exact import efficiency as efficiency
from .exact import exact_frontier as exact_frontier
from .exact import policy_point as policy_point
from .exact import tilted_log_probs as tilted_log_probs
from .model import MAX_SEQUENCES as MAX_SEQUENCES
from .model import Rewards as Rewards
from .model import Testbed as Testbed
from .model import ToyLM as ToyLM
from .model import base_prefix_log_probs as base_prefix_log_probs
from .model import bigram_prefix_table as bigram_prefix_table
from .model import make_testbed as make_testbed
from .model import num_prefixes as num_prefixes
from .model import num_sequences as num_sequences
from .model import prefix_offsets as prefix_offsets
from .model import sample_sequences as sample_sequences
from .model import sequence_index as sequence_index
from .model import sequence_log_probs as sequence_log_probs
from .model import sequences as sequences
from .model import tilted_prefix_log_probs as tilted_prefix_log_probs
from .model import toy_lm as toy_lm

__all__ = [
    "ALGORITHMS",
    "Efficiency",
    "ExactFrontier",
    "ExactPoint",
    "Hyper",
    "MAX_SEQUENCES",
    "POLICIES",
    "Rewards",
    "Setup",
    "Task",
    "Testbed",
    "ToyLM",
    "TrainResult",
    "as_law",
    "base_prefix_log_probs",
    "bigram_prefix_table",
    "bon_log_probs",
    "bon_point",
    "draw_samples",
    "efficiency",
    "exact_frontier",
    "init_params",
    "make_task",
    "make_testbed",
    "num_prefixes",
    "num_sequences",
    "policy_point",
    "policy_table",
    "prefix_offsets",
    "sample_sequences",
    "sequence_index",
    "sequence_log_probs",
    "sequences",
    "sweep",
    "tilted_log_probs",
    "tilted_prefix_log_probs",
    "toy_lm",
    "train",
]
