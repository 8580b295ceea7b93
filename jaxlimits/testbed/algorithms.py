r"""Reference alignment algorithms on the toy LM, trained with optax, evaluated exactly.

Each trainer optimises a policy over the enumerable toy language model as alignment trainers do,
from sampled completions only; after (and during) training its exact sequence-level
``KL(pi || pi0)`` and gain are computed by enumeration (:func:`jaxlimits.testbed.policy_point`),
so its distance to the true frontier is known without estimation error.

Policies (``Setup.policy``):

* ``"tabular"``: a softmax per **full prefix** (logits ``[M, V]``): any law over sequences is
  reachable, so a shortfall from the frontier is the algorithm's, not the model's.
* ``"bigram"``: a position-dependent bigram, the base model's own family (logits ``[V]`` and
  ``[L-1, V, V]``): what limited capacity costs (the tilt of a bigram by a non-additive reward is
  not a bigram).

Both start at the base model (``pi_theta = pi0`` at step 0, as in RLHF).

Algorithms (``Setup.algorithm``), with ``beta = Hyper.kl_coef``:

* ``"rloo"`` (REINFORCE leave-one-out; Ahmadian et al. 2024, TRL's ``RLOOTrainer``): ``k``
  completions per group, the KL in the reward, ``R_i = r_i - beta sum_t log(pi/pi0)(y_t)``;
  advantage ``A_i = R_i - mean_{j != i} R_j``; loss ``-A_i rho_t`` per token, ``rho_t =
  pi_theta/pi_old(y_t)`` (clipped when ``epochs > 1``; at ``rho = 1`` its gradient is
  ``-A_i grad log pi_theta(y_i) / L``). Its expected gradient is the exact gradient of
  ``E_pi[r] - beta KL(pi||pi0)`` (a test checks it): its fixed point is the tilted policy ``pi_beta``.
* ``"ppo"`` (Schulman et al. 2017, as in TRL and "The N+ implementation details of RLHF with PPO",
  Huang et al. 2024): per-token KL penalty ``-beta log(pi_old/pi0)(y_t)`` with the reward on the
  last token, a **tabular critic over prefixes** (it can represent the exact values, so the
  baseline has no capacity limit) with GAE(``gamma = 1``, ``lambda``), whitened advantages,
  the clipped surrogate and a clipped value loss; ``epochs`` passes over ``minibatches``.
* ``"grpo"`` (Shao et al. 2024, DeepSeekMath; TRL's ``GRPOTrainer``): ``G`` completions per
  group, advantages ``(r_i - mean r) / (std r + 1e-4)`` (``normalize=False``: without the std,
  as in Dr. GRPO), no KL in the reward but the per-token ``k3`` estimator in the loss,
  ``k3 = pi0/pi - log(pi0/pi) - 1`` on the sampled tokens, so the loss per token is
  ``-(min(rho A, clip(rho) A) - beta k3)``. On-policy, ``grad E_pi[k3] = grad KL(pi0 || pi)``
  per visited prefix (the *reverse* KL; a test checks it), and the std normalisation rescales the
  reward by a policy-dependent factor, so GRPO's fixed point is in general not a tilted policy.
* ``"exact"``: gradient ascent on the exact objective ``E_pi[r] - beta KL(pi || pi0)`` computed by
  enumeration (no sampling). With the tabular policy it reaches ``pi_beta`` (to machine precision
  at beta >= 0.5 in 3000 steps with a linear schedule on the V=4, L=5 testbed; slower at small
  beta, where the optimum puts tiny mass on many prefixes); its objective gap is
  ``beta KL(pi || pi_beta)`` (:attr:`TrainResult.distance`).

Every trainer is one ``jax.jit``; :func:`sweep` vmaps it over hyper-parameters and seeds.
All losses are means over tokens and sequences (Adam is invariant to the loss scale).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import exact, model

Array = jax.Array

ALGORITHMS = ("rloo", "ppo", "grpo", "exact")
POLICIES = ("tabular", "bigram")
SCHEDULES = ("constant", "linear", "cosine")


class Task(NamedTuple):
    """What a trainer needs: the base model, the reward it is trained on, the score it is measured with.

    Attributes:
      base_table: ``[M, V]`` base next-token log-probabilities over full prefixes.
      base_log_probs: ``[S]`` base log-probabilities of every sequence.
      rewards: ``[S]`` the reward the policy is trained on (gold or a proxy).
      scores: ``[S]`` the reward the result is measured with (the gain's ``s``).
    """

    base_table: Array
    base_log_probs: Array
    rewards: Array
    scores: Array


def make_task(testbed: model.Testbed, reward: str = "gold", score: str = "gold") -> Task:
    """A :class:`Task` from a :class:`~jaxlimits.testbed.Testbed` and names of its reward tables.

    Examples:
      >>> from jaxlimits import testbed
      >>> task = make_task(testbed.make_testbed(0, 3, 3), reward="spurious")
      >>> task.rewards.shape
      (27,)
    """
    names = model.Rewards._fields
    for which, name in (("reward", reward), ("score", score)):
        if name not in names:
            raise ValueError(f"{which} must be one of {names}, got {name!r}")
    r = testbed.rewards
    return Task(testbed.prefix_log_probs, testbed.log_probs, getattr(r, reward), getattr(r, score))


@dataclasses.dataclass(frozen=True)
class Setup:
    """The static part of a training run (shapes, loop lengths, switches): one compilation each.

    Attributes:
      algorithm: ``"rloo"``, ``"ppo"``, ``"grpo"`` or ``"exact"``.
      policy: ``"tabular"`` (softmax per full prefix) or ``"bigram"``.
      steps: optimisation rounds (one batch of samples each; the exact trainer's gradient steps).
      groups: groups of completions per batch (prompts' worth; one prompt here).
      group_size: completions per group (RLOO's ``k``, GRPO's ``G``); PPO uses
        ``groups * group_size`` completions per batch.
      epochs: passes over each batch (``1``: on-policy, the ratio is 1 and clipping inactive).
      minibatches: minibatches per pass (``groups`` must be a multiple).
      normalize: GRPO divides advantages by the group std; PPO whitens its advantages.
      evals: exact evaluations along training (``steps`` must be a multiple).
      max_grad_norm: global gradient-norm clipping (``None``: off).
      schedule: Adam's learning-rate schedule over all updates: ``"constant"``, ``"linear"``
        (decay to 0, TRL's default) or ``"cosine"`` (decay to 0).
    """

    algorithm: str
    policy: str = "tabular"
    steps: int = 500
    groups: int = 8
    group_size: int = 8
    epochs: int = 1
    minibatches: int = 1
    normalize: bool = True
    evals: int = 10
    max_grad_norm: float | None = None
    schedule: str = "constant"

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        for name in ("steps", "groups", "group_size", "epochs", "minibatches", "evals"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.algorithm in ("rloo", "grpo") and self.group_size < 2:
            raise ValueError(f"{self.algorithm} needs group_size >= 2 (a baseline from the group)")
        if self.steps % self.evals:
            raise ValueError(f"steps ({self.steps}) must be a multiple of evals ({self.evals})")
        if self.groups % self.minibatches:
            raise ValueError(f"groups ({self.groups}) must be a multiple of minibatches ({self.minibatches})")


class Hyper(NamedTuple):
    """The continuous hyper-parameters (scalars, or ``[runs]`` arrays for :func:`sweep`).

    Attributes:
      kl_coef: ``beta`` of the KL term (in the reward for RLOO/PPO/exact, in the loss for GRPO).
      learning_rate: Adam's step size.
      clip: PPO/GRPO ratio clipping ``epsilon``.
      gae_lambda: PPO's GAE ``lambda`` (``gamma = 1``).
      value_coef: PPO's value-loss weight.
      value_clip: PPO's value clipping range.
    """

    kl_coef: Any
    learning_rate: Any
    clip: Any = 0.2
    gae_lambda: Any = 0.95
    value_coef: Any = 0.1
    value_clip: Any = 0.2


class TrainResult(NamedTuple):
    """A trained policy and its exact points.

    Attributes:
      params: the policy parameters (a dict of arrays).
      table: ``[M, V]`` the trained policy's next-token log-probabilities (full prefixes).
      log_probs: ``[S]`` its law over sequences.
      curve: :class:`~jaxlimits.testbed.ExactPoint` with fields ``[evals]``: the exact point after
        each ``steps / evals`` steps.
      point: the final exact point.
      distance: ``KL(pi || pi_beta)`` at ``beta = kl_coef``: ``1/beta`` times the gap to the optimal
        value of the KL-regularised objective (meaningful for RLOO, PPO and exact; GRPO's
        ``kl_coef`` is in other units).
    """

    params: Any
    table: Array
    log_probs: Array
    curve: exact.ExactPoint
    point: exact.ExactPoint
    distance: Array


# -- policies -------------------------------------------------------------------------------------


def _sizes(base_table: Array) -> tuple[int, int, tuple[int, ...]]:
    m, v = base_table.shape
    length = model.shape_of(m * (v - 1) + 1, v)
    return v, length, model.prefix_offsets(v, length)


def init_params(base_table: Array, policy: str = "tabular") -> dict:
    """Parameters of a policy equal to the base model (logits = base log-probabilities)."""
    v, length, off = _sizes(base_table)
    if policy == "tabular":
        return {"logits": base_table}
    if policy == "bigram":
        trans = jnp.stack([base_table[off[t] : off[t] + v] for t in range(1, length)]) if length > 1 else (
            jnp.zeros((0, v, v), base_table.dtype))
        return {"first": base_table[0], "trans": trans}
    raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")


def policy_table(params: dict) -> Array:
    """The policy's ``[M, V]`` next-token log-probabilities over full prefixes."""
    if "logits" in params:
        return jax.nn.log_softmax(params["logits"], axis=-1)
    return jax.nn.log_softmax(model.bigram_prefix_table(params["first"], params["trans"]), axis=-1)


def _prefix_ids(tokens: Array, v: int) -> Array:
    """``[batch, L]`` prefix-table row of the prefix before each token."""
    off = model.prefix_offsets(v, tokens.shape[1])
    codes = [jnp.zeros(tokens.shape[:1], tokens.dtype)]
    for t in range(1, tokens.shape[1]):
        codes.append(codes[-1] * v + tokens[:, t - 1])
    return jnp.stack(codes, axis=1) + jnp.asarray(off[:-1], tokens.dtype)


def _bigram_rows(params: dict) -> Array:
    """``[L, V, V]`` bigram logits by position and previous token (position 0 ignores it)."""
    first = jnp.broadcast_to(params["first"], (1,) + params["trans"].shape[1:])
    return jnp.concatenate([first, params["trans"]], axis=0)


def _logits_at(params: dict, ids: Array, prev: Array, pos: Array) -> Array:
    """Logits ``[..., V]`` at prefix rows ``ids`` (tabular) or at ``(pos, prev)`` (bigram)."""
    if "logits" in params:
        return params["logits"][ids]
    return _bigram_rows(params)[pos, prev]


def token_log_probs(params: dict, tokens: Array, ids: Array) -> Array:
    """``[batch, L]`` log-probabilities of the given tokens (prefix rows ``ids``) under the policy."""
    length = tokens.shape[1]
    prev = jnp.concatenate([jnp.zeros_like(tokens[:, :1]), tokens[:, :-1]], axis=1)
    pos = jnp.broadcast_to(jnp.arange(length), tokens.shape)
    rows = jax.nn.log_softmax(_logits_at(params, ids, prev, pos), axis=-1)
    return jnp.take_along_axis(rows, tokens[..., None], axis=-1)[..., 0]


def sample(uniforms: Array, params: dict, v: int) -> Array:
    """Completions ``[n, L]`` from the policy by inverse-CDF sampling of ``uniforms`` ``[n, L]``."""
    n, length = uniforms.shape
    off = model.prefix_offsets(v, length)

    def one(carry, inp):
        code, prev = carry
        t, u = inp
        ids = jnp.asarray(off, jnp.int32)[t] + code
        probs = jax.nn.softmax(_logits_at(params, ids, prev, jnp.full_like(code, t)), axis=-1)
        cdf = jnp.cumsum(probs, axis=-1)
        tok = jnp.minimum(jnp.sum(cdf < u[:, None], axis=-1), v - 1).astype(jnp.int32)
        return (code * v + tok, tok), tok

    zero = jnp.zeros((n,), jnp.int32)
    _, toks = jax.lax.scan(one, (zero, zero), (jnp.arange(length), uniforms.T))
    return toks.T


# -- losses ---------------------------------------------------------------------------------------


class _Batch(NamedTuple):
    tokens: Array  # [n, L]
    ids: Array  # [n, L] prefix rows
    old_lp: Array  # [n, L] log pi_old of the tokens
    ref_lp: Array  # [n, L] log pi0 of the tokens
    adv: Array  # [n, L]
    returns: Array  # [n, L] (PPO)
    old_values: Array  # [n, L] (PPO)


def _surrogate(lp, old_lp, adv, clip):
    ratio = jnp.exp(lp - old_lp)
    return jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip, 1 + clip) * adv)


def _loss(params, batch: _Batch, hyper: Hyper, setup: Setup):
    lp = token_log_probs(params, batch.tokens, batch.ids)
    pg = _surrogate(lp, batch.old_lp, batch.adv, hyper.clip)
    if setup.algorithm == "grpo":
        d = batch.ref_lp - lp
        k3 = jnp.exp(d) - d - 1
        return -jnp.mean(pg - hyper.kl_coef * k3)
    if setup.algorithm == "ppo":
        v = params["values"][batch.ids]
        v_clip = batch.old_values + jnp.clip(v - batch.old_values, -hyper.value_clip, hyper.value_clip)
        vf = 0.5 * jnp.mean(jnp.maximum((v - batch.returns) ** 2, (v_clip - batch.returns) ** 2))
        return -jnp.mean(pg) + hyper.value_coef * vf
    return -jnp.mean(pg)  # rloo


def _gae(rewards: Array, values: Array, lam) -> Array:
    """Generalised advantage estimates ``[n, L]`` with ``gamma = 1`` and a terminal value 0."""
    next_v = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
    delta = rewards + next_v - values

    def back(carry, d):
        a = d + lam * carry
        return a, a

    _, adv = jax.lax.scan(back, jnp.zeros_like(delta[:, 0]), delta.T, reverse=True)
    return adv.T


def _whiten(x: Array) -> Array:
    return (x - jnp.mean(x)) / (jnp.std(x) + 1e-8)


def _make_batch(uniforms, params, task: Task, hyper: Hyper, setup: Setup) -> _Batch:
    n = setup.groups * setup.group_size
    v = task.base_table.shape[1]
    tokens = sample(uniforms, params, v)
    ids = _prefix_ids(tokens, v)
    old_lp = jax.lax.stop_gradient(token_log_probs(params, tokens, ids))
    ref_lp = task.base_table[ids, tokens]
    reward = task.rewards[model.sequence_index(tokens, v)]
    zeros = jnp.zeros_like(old_lp)
    if setup.algorithm == "rloo":
        total = (reward - hyper.kl_coef * jnp.sum(old_lp - ref_lp, axis=1)).reshape(setup.groups, setup.group_size)
        k = setup.group_size
        adv = total - (jnp.sum(total, axis=1, keepdims=True) - total) / (k - 1)
        adv = jnp.broadcast_to(adv.reshape(n, 1), old_lp.shape)
        return _Batch(tokens, ids, old_lp, ref_lp, adv, zeros, zeros)
    if setup.algorithm == "grpo":
        g = reward.reshape(setup.groups, setup.group_size)
        adv = g - jnp.mean(g, axis=1, keepdims=True)
        if setup.normalize:
            adv = adv / (jnp.std(g, axis=1, ddof=1, keepdims=True) + 1e-4)
        adv = jnp.broadcast_to(adv.reshape(n, 1), old_lp.shape)
        return _Batch(tokens, ids, old_lp, ref_lp, adv, zeros, zeros)
    # ppo
    values = jax.lax.stop_gradient(params["values"][ids])
    per_token = -hyper.kl_coef * (old_lp - ref_lp)
    per_token = per_token.at[:, -1].add(reward)
    adv = _gae(per_token, values, hyper.gae_lambda)
    returns = adv + values
    if setup.normalize:
        adv = _whiten(adv)
    return _Batch(tokens, ids, old_lp, ref_lp, adv, returns, values)


def _exact_objective(params, task: Task, beta):
    lp = model.sequence_log_probs(policy_table(params))
    p = jnp.exp(lp)
    kl = jnp.sum(exact.xlogy_diff(lp, task.base_log_probs))
    return p @ task.rewards - beta * kl


def _optimizer(hyper: Hyper, setup: Setup) -> optax.GradientTransformation:
    updates = setup.steps * (1 if setup.algorithm == "exact" else setup.epochs * setup.minibatches)
    lr = hyper.learning_rate
    if setup.schedule == "linear":
        lr = optax.linear_schedule(hyper.learning_rate, 0.0, updates)
    elif setup.schedule == "cosine":
        lr = optax.cosine_decay_schedule(hyper.learning_rate, updates)
    adam = optax.adam(lr)
    if setup.max_grad_norm is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(setup.max_grad_norm), adam)


def _step(state, key, task: Task, hyper: Hyper, setup: Setup, length: int):
    params, opt_state = state
    opt = _optimizer(hyper, setup)
    if setup.algorithm == "exact":
        grads = jax.grad(lambda p: -_exact_objective(p, task, hyper.kl_coef))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None
    n = setup.groups * setup.group_size
    # One draw of uniforms per round: the completions' inverse-CDF sampling, then the shuffles.
    u = jax.random.uniform(key, (n * length + setup.epochs * setup.groups,), task.base_table.dtype)
    batch = _make_batch(u[: n * length].reshape(n, length), params, task, hyper, setup)
    mb = n // setup.minibatches

    def one_epoch(state, u_perm):
        perm = jnp.argsort(u_perm) if setup.minibatches > 1 else jnp.arange(setup.groups)  # shuffle groups
        idx = (perm[:, None] * setup.group_size + jnp.arange(setup.group_size)[None, :]).reshape(-1)

        def one_minibatch(state, i):
            params, opt_state = state
            sel = jax.lax.dynamic_slice_in_dim(idx, i * mb, mb)
            sub = jax.tree.map(lambda x: x[sel], batch)
            grads = jax.grad(_loss)(params, sub, hyper, setup)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        return jax.lax.scan(one_minibatch, state, jnp.arange(setup.minibatches))[0], None

    state, _ = jax.lax.scan(one_epoch, (params, opt_state), u[n * length :].reshape(setup.epochs, setup.groups))
    return state, None


@functools.partial(jax.jit, static_argnames=("setup",))
def train(task: Task, setup: Setup, hyper: Hyper, key: Array) -> TrainResult:
    """Trains one policy from the base model and evaluates it exactly (jit-compiled per ``setup``).

    The loop is ``evals`` exact evaluations, each after ``steps / evals`` rounds; a round samples
    ``groups * group_size`` completions from the current policy (RLOO/PPO/GRPO) and takes
    ``epochs * minibatches`` Adam steps (the exact trainer takes one step on the exact gradient).

    Args:
      task: the :class:`Task`.
      setup: the static :class:`Setup`.
      hyper: the :class:`Hyper` (scalars).
      key: a ``jax.random`` key.

    Returns:
      :class:`TrainResult`.

    Examples:
      >>> import jax
      >>> from jaxlimits import testbed
      >>> task = make_task(testbed.make_testbed(0, 3, 3))
      >>> res = train(task, Setup("exact", steps=300, evals=1), Hyper(kl_coef=1.0, learning_rate=0.1),
      ...             jax.random.PRNGKey(0))
      >>> bool(res.distance < 1e-4)
      True
    """
    _, length, _ = _sizes(task.base_table)
    dtype = task.base_table.dtype
    hyper = Hyper(*(jnp.asarray(h, dtype) for h in hyper))
    params = init_params(task.base_table, setup.policy)
    if setup.algorithm == "ppo":
        params = dict(params, values=jnp.zeros(task.base_table.shape[:1], dtype))
    opt_state = _optimizer(hyper, setup).init(params)
    per_eval = setup.steps // setup.evals
    step = functools.partial(_step, task=task, hyper=hyper, setup=setup, length=length)

    def evaluate(params):
        lp = model.sequence_log_probs(policy_table(params))
        return exact.policy_point(lp, task.base_log_probs, task.scores)

    def chunk(state, k):
        state, _ = jax.lax.scan(step, state, jax.random.split(k, per_eval))
        return state, evaluate(state[0])

    (params, _), curve = jax.lax.scan(chunk, (params, opt_state), jax.random.split(key, setup.evals))
    table = policy_table(params)
    lp = model.sequence_log_probs(table)
    point = exact.policy_point(lp, task.base_log_probs, task.scores)
    target = exact.tilted_log_probs(task.base_log_probs, task.rewards, hyper.kl_coef)
    distance = jnp.sum(exact.xlogy_diff(lp, target))
    return TrainResult(params, table, lp, curve, point, distance)


def sweep(task: Task, setup: Setup, hypers: Hyper, keys: Array) -> TrainResult:
    """:func:`train` vmapped over runs: ``hypers`` fields and ``keys`` share a leading ``[runs]`` axis.

    Scalar fields of ``hypers`` are broadcast. Returns a :class:`TrainResult` with a leading
    ``[runs]`` axis on every field.
    """
    runs = keys.shape[0]
    dtype = task.base_table.dtype
    hypers = Hyper(*(jnp.broadcast_to(jnp.asarray(h, dtype), (runs,)) for h in hypers))
    return jax.vmap(lambda h, k: train(task, setup, h, k))(hypers, keys)
