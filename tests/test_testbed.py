"""The exact testbed: a toy LM small enough to enumerate (jaxlimits.testbed).

Every check here is against exact enumeration. The testbed in most tests has V = 4 tokens and
L = 5 positions (1024 sequences, 341 prefixes), so every sum is exact and cheap; the trainers
compile once per setup (about 5-15 s each on a 2-core CPU), which is what the slow marks are for.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import jaxlimits as jl
from jaxlimits import estimators
from jaxlimits import testbed as tbm
from jaxlimits.testbed import algorithms as algo

V, L = 4, 5
BETAS = np.geomspace(5.0, 0.05, 25)


@functools.cache
def bed(seed: int = 0, vocab_size: int = V, length: int = L) -> tbm.Testbed:
    return tbm.make_testbed(seed, vocab_size, length)


def dual_bound(lp0, r, kl):
    """``min_beta beta (log Z(beta) + KL) - E_0 r`` over a grid: an upper bound on ``gain*(KL)``.

    Weak duality (MATH.md §5): every policy with ``KL(pi||pi0) = K`` has
    ``E_pi[r] - E_0[r] <= beta (log Z(beta) + K) - E_0[r]`` for *every* beta > 0, so a point
    above this bound would contradict the theorem, with no inversion involved.
    """
    b, lz, e0 = _dual_curve(np.asarray(lp0).tobytes(), np.asarray(r).tobytes())
    kl = np.atleast_1d(np.asarray(kl, np.float64))
    return np.min(b[None, :] * (lz[None, :] + kl[:, None]), axis=1) - e0


@functools.lru_cache(maxsize=8)
def _dual_curve(lp0: bytes, r: bytes):
    lp0, r = jnp.asarray(np.frombuffer(lp0)), jnp.asarray(np.frombuffer(r))
    f = tbm.exact_frontier(lp0, r, jnp.asarray(np.geomspace(1e-3, 1e3, 3001)))
    return np.asarray(f.betas), np.asarray(f.log_z), float(jnp.exp(lp0) @ r)


def chi_square_p(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's test of observed counts against probabilities (cells with expectation < 5 pooled)."""
    n = counts.sum()
    expected = n * probs
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] < 5:  # fold a small pooled cell into the largest
        obs, exp = obs[:-1], exp[:-1]
        obs[np.argmax(exp)] += counts[~big].sum()
        exp[np.argmax(exp)] += expected[~big].sum()
    return float(stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


# ----------------------------------------------------------------------------------------------
# The model: enumeration, prefix tables, sampling.


def test_sequences_and_prefix_layout():
    seqs = tbm.sequences(V, L)
    assert seqs.shape == (V**L, L)
    np.testing.assert_array_equal(np.asarray(tbm.sequence_index(seqs, V)), np.arange(V**L))
    assert tbm.num_prefixes(V, L) == (V**L - 1) // (V - 1)
    assert tbm.prefix_offsets(V, L)[-1] == tbm.num_prefixes(V, L)
    tb = bed()
    assert tb.prefix_log_probs.shape == (tbm.num_prefixes(V, L), V)
    # Rows are normalised, the law sums to one, and the chain rule matches a direct product.
    np.testing.assert_allclose(np.exp(np.asarray(tb.prefix_log_probs)).sum(-1), 1.0, atol=1e-14)
    assert float(jax.nn.logsumexp(tb.log_probs)) == pytest.approx(0.0, abs=1e-13)
    first, trans = np.asarray(tb.lm.first), np.asarray(tb.lm.transitions)
    direct = first[seqs[:, 0]] + sum(trans[t - 1, seqs[:, t - 1], seqs[:, t]] for t in range(1, L))
    np.testing.assert_allclose(np.asarray(tb.log_probs), direct, atol=1e-13)


def test_rewards_structure():
    tb = bed()
    p = np.exp(np.asarray(tb.log_probs))
    g = np.asarray(tb.rewards.gold)
    assert p @ g == pytest.approx(0.0, abs=1e-12)
    assert p @ g**2 == pytest.approx(1.0, abs=1e-12)
    seqs = tbm.sequences(V, L)
    spurious = np.asarray(tb.rewards.spurious) - g
    np.testing.assert_allclose(spurious, 0.5 * (seqs == tb.spurious_token).sum(-1), atol=1e-12)
    # The additive part is a sum of per-position token values: its second differences vanish.
    a = np.asarray(tb.rewards.additive).reshape((V,) * L)
    d = a[1:, 1:] - a[1:, :-1] - a[:-1, 1:] + a[:-1, :-1]
    assert np.max(np.abs(d)) < 1e-12


def test_testbed_errors():
    with pytest.raises(ValueError, match="too many to enumerate"):
        tbm.make_testbed(0, 100, 5)
    with pytest.raises(ValueError, match="vocab_size"):
        tbm.make_testbed(0, 1, 5)
    with pytest.raises(ValueError, match="motif_length"):
        tbm.make_testbed(0, 4, 3, motif_length=4)
    with pytest.raises(ValueError, match="reward must be one of"):
        tbm.make_task(bed(), reward="silver")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        tbm.Setup("dpo")
    with pytest.raises(ValueError, match="multiple of evals"):
        tbm.Setup("rloo", steps=10, evals=3)
    with pytest.raises(ValueError, match="group_size >= 2"):
        tbm.Setup("grpo", group_size=1)
    with pytest.raises(ValueError, match="positive"):
        tbm.draw_samples(jax.random.PRNGKey(0), bed().log_probs, bed().rewards.gold, 0)


def test_samplers_follow_the_law():
    """The model's token-by-token sampler, the trainers' inverse-CDF sampler and draw_samples."""
    tb = bed()
    probs = np.exp(np.asarray(tb.log_probs))
    n = 200_000
    toks = tbm.sample_sequences(jax.random.PRNGKey(1), tb.prefix_log_probs, n)
    counts = np.bincount(np.asarray(tbm.sequence_index(toks, V)), minlength=V**L)
    assert chi_square_p(counts, probs) > 1e-4
    u = jax.random.uniform(jax.random.PRNGKey(2), (n, L))
    for policy in tbm.POLICIES:
        toks = algo.sample(u, tbm.init_params(tb.prefix_log_probs, policy), V)
        counts = np.bincount(np.asarray(tbm.sequence_index(toks, V)), minlength=V**L)
        assert chi_square_p(counts, probs) > 1e-4
    _, idx = tbm.draw_samples(jax.random.PRNGKey(3), tb.log_probs, tb.rewards.gold, n)
    assert chi_square_p(np.bincount(np.asarray(idx[0]), minlength=V**L), probs) > 1e-4


def test_tilted_prefix_table_is_the_tilt():
    tb = bed()
    r = tb.rewards.gold
    for beta in (3.0, 0.7, 0.1):
        table, log_z = tbm.tilted_prefix_log_probs(tb.prefix_log_probs, r, beta)
        np.testing.assert_allclose(np.exp(np.asarray(table)).sum(-1), 1.0, atol=1e-13)
        np.testing.assert_allclose(
            np.asarray(tbm.sequence_log_probs(table)), np.asarray(tbm.tilted_log_probs(tb.log_probs, r, beta)),
            atol=1e-11,
        )
        assert float(log_z) == pytest.approx(float(jax.nn.logsumexp(tb.log_probs + r / beta)), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# The exact frontier and the Monte Carlo estimators.


def test_exact_frontier_equals_the_analytic_tilt():
    """Enumeration (the testbed's own sums) against jaxlimits.tilt on the exact law (log-weights)."""
    tb = bed()
    for reward, score in (("gold", "gold"), ("spurious", "gold"), ("noisy", "gold")):
        r, s = getattr(tb.rewards, reward), getattr(tb.rewards, score)
        mine = tbm.exact_frontier(tb.log_probs, r, BETAS, scores=s)
        st_ = jl.tilt(tbm.as_law(tb.log_probs, r, s), BETAS)
        for name in ("kl", "gain", "reverse_kl", "log_z"):
            np.testing.assert_allclose(np.asarray(getattr(st_, name)[0]), np.asarray(getattr(mine, name)),
                                       rtol=1e-11, atol=1e-12, err_msg=f"{reward}/{name}")
        assert np.all(np.asarray(st_.gain_se) == 0) and np.all(np.asarray(st_.kl_se) == 0)
        assert not np.any(np.asarray(st_.saturated))
    # Theorem 1 on the exact law: gain = beta * (KL + reverse KL) when s = r.
    f = tbm.exact_frontier(tb.log_probs, tb.rewards.gold, BETAS)
    np.testing.assert_allclose(np.asarray(f.gain), BETAS * np.asarray(f.kl + f.reverse_kl), rtol=1e-11)


def test_exact_frontier_float32():
    """float32 tables: the same sums, to float32 accuracy (rtol 1e-4 over KL from 1e-3 to 8)."""
    tb32 = tbm.make_testbed(0, V, L, dtype=jnp.float32)
    assert tb32.log_probs.dtype == jnp.float32
    f32 = tbm.exact_frontier(tb32.log_probs, tb32.rewards.gold, BETAS.astype(np.float32))
    f64 = tbm.exact_frontier(bed().log_probs, bed().rewards.gold, BETAS)
    assert f32.kl.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(f32.kl), np.asarray(f64.kl), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(f32.gain), np.asarray(f64.gain), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_monte_carlo_converges_to_the_exact_frontier():
    """N base samples (64 replicates as 64 prompts) against the exact frontier.

    * Where the estimate is not flagged, the error is within 3 reported SEs for at least 90% of
      the (replicate, beta) pairs (nominal 99.7%; the delta method runs a little low).
    * The RMSE over replicates shrinks from N = 512 to N = 8192 (by about 4 = sqrt(16)).
    * Where the exact KL is at or beyond 0.9 log N (what N samples cannot show; the grid reaches
      there for N = 512), every estimate is flagged as saturated.
    """
    tb = bed()
    r = tb.rewards.gold
    exact_f = tbm.exact_frontier(tb.log_probs, r, BETAS)
    ex_gain, ex_kl = np.asarray(exact_f.gain), np.asarray(exact_f.kl)
    rmse = {}
    for n, key in ((512, 10), (8192, 11)):
        samples, _ = tbm.draw_samples(jax.random.PRNGKey(key), tb.log_probs, r, n, replicates=64)
        st_ = jl.tilt(samples, BETAS)
        gain, kl = np.asarray(st_.gain), np.asarray(st_.kl)
        sat = np.asarray(st_.saturated)
        # "few" (ESS < 600) is about one prompt's normal 95% interval; this is a looser 3-SE check
        ok = (np.asarray(st_.reasons) & ~estimators.FEW) == 0
        assert ok.sum() >= 64 * 3, f"N={n}: too few unflagged estimates to test ({ok.sum()})"
        for name, est, se, truth in (("gain", gain, st_.gain_se, ex_gain), ("kl", kl, st_.kl_se, ex_kl)):
            inside = np.abs(est - truth[None, :]) <= 3 * np.asarray(se)
            assert inside[ok].mean() >= 0.9, f"N={n} {name}: coverage {inside[ok].mean():.3f}"
        far = ex_kl >= 0.9 * np.log(n)
        assert sat[:, far].all(), f"N={n}: an estimate beyond 0.9 log N is not flagged"
        assert far.any() or n > 512  # the grid reaches beyond log N for the small N
        rmse[n] = np.sqrt(np.mean((gain - ex_gain[None, :]) ** 2, axis=0))
    both = ex_kl < 0.5 * np.log(512)
    assert both.sum() >= 5
    assert np.all(rmse[8192][both] < rmse[512][both] / 2)


# ----------------------------------------------------------------------------------------------
# Best-of-n, exactly.


def test_bon_worked_values_and_limits():
    lp = jnp.log(jnp.full(10, 0.1))
    pt = tbm.bon_point(lp, jnp.arange(10.0), jnp.array([1, 2, 16, 256]))
    np.testing.assert_allclose(np.asarray(pt.kl), [0.0, 0.18932, 1.73306, 2.30259], atol=5e-6)
    # Distinct rewards with small masses: KL below (and near) log n - (n-1)/n.
    tb = bed()
    ns = np.array([2, 4, 16, 64])
    k = np.asarray(tbm.bon_point(tb.log_probs, tb.rewards.gold, ns).kl)
    analytic = np.log(ns) - (ns - 1) / ns
    assert np.all(k <= analytic + 1e-12) and np.all(k > 0.95 * analytic)


def test_bon_law_matches_simulated_best_of_n():
    """Draw n base sequences, keep the best (ties uniformly): frequencies follow bon_log_probs.

    The count reward (occurrences of token 0) ties across many sequences; the gold reward
    does not. Pearson's test over sequences.
    """
    tb = bed()
    seqs = tbm.sequences(V, L)
    count_reward = jnp.asarray((seqs == 0).sum(-1), jnp.float64)
    reps, n = 100_000, 4
    for reward in (tb.rewards.gold, count_reward):
        _, idx = tbm.draw_samples(jax.random.PRNGKey(5), tb.log_probs, reward, n, replicates=reps)
        r = np.asarray(reward)[np.asarray(idx)]
        tiebreak = np.random.default_rng(0).uniform(size=r.shape)
        best = np.lexsort((tiebreak, r), axis=1)[:, -1]  # highest r, uniform among ties
        chosen = np.asarray(idx)[np.arange(reps), best]
        probs = np.exp(np.asarray(tbm.bon_log_probs(tb.log_probs, reward, n)))
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)
        assert chi_square_p(np.bincount(chosen, minlength=V**L), probs) > 1e-4


def test_bon_agrees_with_the_library():
    """The testbed's exact BoN law against jaxlimits.best_of_n on the exact law (issue 4).

    Distinct rewards (gold), and a tied count reward measured with the gold score.
    """
    tb = bed()
    ns = [1, 2, 4, 16, 64]
    count_reward = jnp.asarray((tbm.sequences(V, L) == 0).sum(-1), jnp.float64)
    for r, s in ((tb.rewards.gold, None), (count_reward, tb.rewards.gold)):
        lib = jl.best_of_n(tbm.as_law(tb.log_probs, r, s), ns, kl_method="exact", frontier=False)
        mine = tbm.bon_point(tb.log_probs, r, jnp.asarray(ns), scores=s)
        np.testing.assert_allclose(np.asarray(lib.gain), np.asarray(mine.gain), atol=1e-10)
        np.testing.assert_allclose(np.asarray(lib.kl_exact), np.asarray(mine.kl), atol=1e-10)


# ----------------------------------------------------------------------------------------------
# No policy above the frontier.


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.01, 5.0), reward=st.sampled_from(["gold", "spurious"]))
def test_random_policies_lie_below_the_frontier(seed, scale, reward):
    """The theorem as a property: any full-prefix policy's exact point is under the dual bound."""
    tb = bed()
    logits = tb.prefix_log_probs + scale * jax.random.normal(jax.random.PRNGKey(seed), tb.prefix_log_probs.shape)
    lp = tbm.sequence_log_probs(jax.nn.log_softmax(logits, axis=-1))
    r = getattr(tb.rewards, reward)
    pt = tbm.policy_point(lp, tb.log_probs, r)
    assert float(pt.gain) <= dual_bound(tb.log_probs, r, float(pt.kl))[0] + 1e-12


# ----------------------------------------------------------------------------------------------
# Trainers.


def test_exact_gradient_training_reaches_the_tilted_optimum():
    """Full-prefix policy, exact gradients of E[r] - beta KL: the tilted policy is reached.

    The objective gap is ``beta KL(pi || pi_beta)`` (``J(pi) = beta log Z - beta KL(pi||pi_beta)``),
    checked too.
    """
    tb = bed()
    task = tbm.make_task(tb)
    betas = jnp.array([2.0, 1.0, 0.5])
    setup = tbm.Setup("exact", steps=3000, evals=1, schedule="linear")
    res = tbm.sweep(task, setup, tbm.Hyper(betas, 0.3), jax.random.split(jax.random.PRNGKey(0), 3))
    f = tbm.exact_frontier(task.base_log_probs, task.rewards, betas)
    assert np.all(np.asarray(res.distance) < 1e-10)
    np.testing.assert_allclose(np.asarray(res.point.kl), np.asarray(f.kl), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(res.point.gain), np.asarray(f.gain), rtol=1e-6)
    objective = np.asarray(res.point.gain) - np.asarray(betas) * np.asarray(res.point.kl)
    optimum = np.asarray(betas) * np.asarray(f.log_z)  # E_0[r] = 0
    np.testing.assert_allclose(optimum - objective, np.asarray(betas) * np.asarray(res.distance), atol=1e-12)


def test_bigram_policy_capacity():
    """A bigram policy reaches the tilt of a token-additive reward, not that of the gold reward."""
    tb = bed()
    setup = tbm.Setup("exact", policy="bigram", steps=3000, evals=1, schedule="linear")
    hyper = tbm.Hyper(0.5, 0.3)
    key = jax.random.PRNGKey(0)
    additive = tbm.train(tbm.make_task(tb, "additive", "additive"), setup, hyper, key)
    gold = tbm.train(tbm.make_task(tb), setup, hyper, key)
    assert float(additive.distance) < 1e-10
    assert float(gold.distance) > 1e-3


def _projected(grads, directions):
    return np.asarray(jnp.tensordot(grads, directions, axes=([1, 2], [1, 2])))


def _check_unbiased(batch_grads: jax.Array, exact_grad: jax.Array):
    """Mean of per-batch gradients equals the exact gradient, along 8 random directions, within 4 SE."""
    dirs = jax.random.normal(jax.random.PRNGKey(99), (8,) + exact_grad.shape)
    proj = _projected(batch_grads, dirs)  # [batches, 8]
    mean, se = proj.mean(0), proj.std(0, ddof=1) / np.sqrt(proj.shape[0])
    truth = _projected(exact_grad[None], dirs)[0]
    assert np.all(np.abs(mean - truth) <= 4 * se), (mean, truth, se)
    assert np.all(np.abs(truth) > 4 * se)  # the check has power: the gradient is resolved


@pytest.mark.slow
def test_policy_gradients_are_unbiased():
    """RLOO's and PPO's (lambda = 1, no whitening) first-step gradients estimate the exact gradient.

    And GRPO's k3 term estimates the gradient of the *reverse* KL summed over visited prefixes,
    ``sum_p d_pi(p) KL(pi0(.|p) || pi(.|p))`` (visitation held fixed), not of KL(pi || pi0).
    """
    tb = bed()
    task = tbm.make_task(tb)
    beta = 0.7
    logits = tb.prefix_log_probs + 0.7 * jax.random.normal(jax.random.PRNGKey(4), tb.prefix_log_probs.shape)
    params = {"logits": logits}
    hyper = algo.Hyper(*(jnp.asarray(h, jnp.float64) for h in algo.Hyper(beta, 0.1, gae_lambda=1.0)))
    exact_grad = -jax.grad(algo._exact_objective)(params, task, beta)["logits"] / L  # losses: mean over tokens
    keys = jax.random.split(jax.random.PRNGKey(5), 4000)

    def batch_grad(setup, params, task, u):
        batch = algo._make_batch(u, params, task, hyper, setup)
        return jax.grad(algo._loss)(params, batch, hyper, setup)["logits"]

    def grads(setup, params, task):
        n = setup.groups * setup.group_size
        fn = jax.jit(jax.vmap(lambda k: batch_grad(setup, params, task, jax.random.uniform(k, (n, L)))))
        return jnp.concatenate([fn(k) for k in jnp.split(keys, 4)])

    _check_unbiased(grads(algo.Setup("rloo", groups=4, group_size=4), params, task), exact_grad)
    values = jax.random.normal(jax.random.PRNGKey(6), tb.prefix_log_probs.shape[:1])  # any baseline
    ppo = algo.Setup("ppo", groups=4, group_size=4, normalize=False)
    _check_unbiased(grads(ppo, dict(params, values=values), task), exact_grad)

    zero = task._replace(rewards=jnp.zeros_like(task.rewards))  # GRPO advantages vanish: k3 alone
    grpo = grads(algo.Setup("grpo", groups=4, group_size=4), params, zero)

    def reverse_kl_over_visits(lg):
        table = jax.nn.log_softmax(lg, axis=-1)
        off = tbm.prefix_offsets(V, L)
        visits = []  # probability of each prefix under pi (held fixed)
        lp = jnp.zeros(1)
        for t in range(L):
            visits.append(jnp.exp(lp))
            lp = (lp[:, None] + jax.lax.stop_gradient(table)[off[t] : off[t + 1]]).reshape(-1)
        d = jnp.concatenate(visits)
        p0 = jnp.exp(tb.prefix_log_probs)
        return jnp.sum(d * jnp.sum(p0 * (tb.prefix_log_probs - table), axis=-1))

    _check_unbiased(grpo, beta * jax.grad(reverse_kl_over_visits)(logits) / L)


@pytest.mark.slow
def test_trained_policies_lie_below_the_frontier():
    """RLOO, PPO and GRPO, short sweeps: every exact point (along training) is under the frontier.

    Checked twice: the weak-duality bound (no solver), and the library's frontier inversion
    (``efficiency``: reward and KL efficiencies at most 1).
    """
    tb = bed()
    task = tbm.make_task(tb)
    coefs = jnp.array([1.0, 0.3, 0.1, 0.03])
    kl, gain = [], []
    for setup in (
        tbm.Setup("rloo", steps=200, evals=4, groups=4, group_size=4),
        tbm.Setup("ppo", steps=200, evals=4, groups=4, group_size=4, epochs=2, minibatches=2),
        tbm.Setup("grpo", steps=200, evals=4, groups=4, group_size=4, epochs=2),
    ):
        res = tbm.sweep(task, setup, tbm.Hyper(coefs, 0.05), jax.random.split(jax.random.PRNGKey(1), 4))
        assert np.all(np.isfinite(np.asarray(res.curve.kl)))
        assert np.all(np.asarray(res.point.gain) > 0), setup  # training did something
        kl.append(np.asarray(res.curve.kl).ravel())
        gain.append(np.asarray(res.curve.gain).ravel())
    kl, gain = np.concatenate(kl), np.concatenate(gain)
    assert np.all(gain <= dual_bound(task.base_log_probs, task.scores, kl) + 1e-12)
    # BoN's exact points: below the frontier, and close to it.
    ns = jnp.array([2, 4, 8, 16, 32, 64, 128, 256])
    b = tbm.bon_point(task.base_log_probs, task.rewards, ns)
    assert np.all(np.asarray(b.gain) <= dual_bound(task.base_log_probs, task.scores, np.asarray(b.kl)) + 1e-12)
    # Two points on the frontier, to check the solver (both efficiencies 1 there).
    f = tbm.exact_frontier(task.base_log_probs, task.scores, jnp.array([1.0, 0.3]))
    # One call of the library's inversion for all points (each solver compiles once).
    eff = tbm.efficiency(task.base_log_probs, task.scores, np.concatenate([kl, np.asarray(b.kl), np.asarray(f.kl)]),
                         np.concatenate([gain, np.asarray(b.gain), np.asarray(f.gain)]))
    re, ke = np.asarray(eff.reward_efficiency), np.asarray(eff.kl_efficiency)
    assert np.all(re[:-2] <= 1 + 1e-9) and np.all(ke[:-2] <= 1 + 1e-9)
    bon_eff = re[len(kl) : len(kl) + len(ns)]
    assert np.all(bon_eff >= 0.85), bon_eff
    np.testing.assert_allclose(re[-2:], 1.0, atol=1e-9)
    np.testing.assert_allclose(ke[-2:], 1.0, atol=1e-9)


@pytest.mark.slow
def test_trainers_float32_bigram():
    """float32 tables train (RLOO with the bigram policy, sampled): finite, improving, below the frontier."""
    tb32 = tbm.make_testbed(0, 3, 4, dtype=jnp.float32)
    task = tbm.make_task(tb32)
    setup = tbm.Setup("rloo", policy="bigram", steps=100, evals=2, groups=4, group_size=4)
    res = tbm.sweep(task, setup, tbm.Hyper(jnp.array([0.5, 1.0], jnp.float32), 0.05),
                    jax.random.split(jax.random.PRNGKey(0), 2))
    assert res.point.kl.dtype == jnp.float32 and res.table.dtype == jnp.float32
    assert set(res.params) == {"first", "trans"}
    gain = np.asarray(res.point.gain, np.float64)
    assert np.all(np.isfinite(gain)) and np.all(gain > 0)
    lp0, r = np.asarray(task.base_log_probs, np.float64), np.asarray(task.rewards, np.float64)
    assert np.all(gain <= dual_bound(lp0, r, np.asarray(res.point.kl, np.float64)) + 1e-5)  # float32 sums
