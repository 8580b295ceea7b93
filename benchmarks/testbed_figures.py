"""The paper's Figures 1-3 on the exact testbed: everything known exactly, estimators held to the truth.

On a toy language model small enough to enumerate (``jaxlimits.testbed``; by default V = 8 tokens,
L = 5 positions, 32,768 sequences):

* **Figure 1** (``fig1_frontier.png``): the exact KL-reward frontier (enumeration, checked against
  ``jaxlimits.tilt`` on the exact law), the frontier estimated from N base samples with its
  bootstrap band (saturated part drawn dashed), best-of-n's exact points, and the exact points of
  RLOO, PPO and GRPO runs (tabular full-prefix policies; RLOO also with a bigram policy) from a
  hyper-parameter sweep; the best run of each algorithm is highlighted.
* **Figure 2** (``fig2_gain_vs_n.png``) and **Figure 3** (``fig3_kl_vs_n.png``): the gain and KL
  estimators (Definitions 1 and 2) against the number of base samples N for several betas, with
  the exact values; relative RMSE against N.

Also written: ``efficiency.csv`` (every trained run: hyper-parameters, exact KL and gain, reward
and KL efficiencies against the exact frontier), ``bon.csv``, ``estimators.csv`` and
``summary.json`` (the sweep grids, timings, best runs, machine). Nothing is overwritten unless
``--force`` is given.

Run:  python benchmarks/testbed_figures.py OUT_DIR [--force] [--quick]
(``--quick``: a smaller sweep and fewer replicates, for a smoke run in a minute or two.)
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import jaxlimits as jl  # noqa: E402
from jaxlimits import testbed as tb  # noqa: E402

OUTPUTS = ("fig1_frontier.png", "fig2_gain_vs_n.png", "fig3_kl_vs_n.png", "efficiency.csv", "bon.csv",
           "estimators.csv", "summary.json")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="folder for the PNGs and tables (created if absent)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--quick", action="store_true", help="small sweep and few replicates (smoke run)")
    p.add_argument("--vocab", type=int, default=8, help="vocabulary size V (default 8)")
    p.add_argument("--length", type=int, default=5, help="sequence length L (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the testbed (default 0)")
    p.add_argument("--base-samples", type=int, nargs="+", default=[500, 5000],
                   help="N for the estimated frontiers (default 500 5000)")
    p.add_argument("--steps", type=int, default=2000, help="training rounds per run (default 2000)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# The sweeps (what was swept is written to summary.json).


def sweep_grid(quick: bool):
    """Per algorithm: the static setup(s) and the grid of (kl_coef, learning_rate), seeds."""
    kl_rl = [2.0, 1.0, 0.5, 0.3, 0.2, 0.1]
    kl_grpo = [3.0, 1.0, 0.3, 0.1, 0.03]  # GRPO's beta multiplies k3 against unit-std advantages
    lrs = [0.01, 0.03, 0.1]
    seeds = [0, 1]
    if quick:
        kl_rl, kl_grpo, lrs, seeds = [1.0, 0.3], [1.0, 0.1], [0.03], [0]
    common = dict(groups=8, group_size=8, schedule="linear")
    return {
        "RLOO": (dict(algorithm="rloo", **common), kl_rl, lrs, seeds),
        "PPO": (dict(algorithm="ppo", epochs=2, minibatches=2, **common), kl_rl, lrs, seeds),
        "GRPO": (dict(algorithm="grpo", epochs=1, **common), kl_grpo, lrs, seeds),
        "RLOO (bigram policy)": (dict(algorithm="rloo", policy="bigram", **common), kl_rl, lrs, seeds),
    }


def run_sweeps(task32, task64, steps: int, quick: bool):
    """Trains every run (float32, vmapped per setup); exact points re-evaluated in float64."""
    rows, timings = [], {}
    for name, (static, coefs, lrs, seeds) in sweep_grid(quick).items():
        setup = tb.Setup(steps=steps, evals=20 if steps % 20 == 0 else 1, **static)
        grid = list(itertools.product(coefs, lrs, seeds))
        c, lr, sd = (np.array(x) for x in zip(*grid))
        keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(int(s)), i) for i, s in enumerate(sd)])
        hyper = tb.Hyper(jnp.asarray(c, jnp.float32), jnp.asarray(lr, jnp.float32))
        t0 = time.perf_counter()
        compiled = jax.jit(tb.sweep, static_argnums=1).lower(task32, setup, hyper, keys).compile()
        t1 = time.perf_counter()
        res = jax.block_until_ready(compiled(task32, hyper, keys))
        timings[name] = dict(compile=t1 - t0, run=time.perf_counter() - t1, runs=len(grid), rounds=steps)
        # Exact points in float64 from the trained tables.
        lp = jax.vmap(tb.sequence_log_probs)(jnp.asarray(res.table, jnp.float64))
        pt = tb.policy_point(lp, task64.base_log_probs, task64.scores)
        curve_kl, curve_gain = np.asarray(res.curve.kl), np.asarray(res.curve.gain)
        for i in range(len(grid)):
            rows.append(dict(algorithm=name, kl_coef=float(c[i]), learning_rate=float(lr[i]), seed=int(sd[i]),
                             steps=steps, groups=setup.groups, group_size=setup.group_size, epochs=setup.epochs,
                             minibatches=setup.minibatches, policy=setup.policy,
                             kl=float(pt.kl[i]), gain=float(pt.gain[i]),
                             curve_kl=curve_kl[i].tolist(), curve_gain=curve_gain[i].tolist()))
        print(f"  {name}: {len(grid)} runs x {steps} rounds: compiled in {timings[name]['compile']:.1f} s, "
              f"ran in {timings[name]['run']:.1f} s")
    return rows, timings


# ----------------------------------------------------------------------------------------------
# Estimator convergence (Figures 2-3): one compilation, all N at once through the mask.


def estimator_study(bed, betas, ns, reps, key):
    """``[len(ns), reps, B]`` estimates, SEs and flags from ``reps`` replicates of N base draws."""
    n_max = max(ns)
    samples, _ = tb.draw_samples(key, bed.log_probs, bed.rewards.gold, n_max, replicates=reps * len(ns))
    r = samples.rewards.reshape(len(ns), reps, n_max)
    out = {k: [] for k in ("gain", "kl", "gain_se", "kl_se", "saturated", "ess")}
    for j, n in enumerate(ns):
        mask = np.zeros((reps, n_max), bool)
        mask[:, :n] = True
        st = jl.tilt(jl.Samples(r[j], mask=mask), betas)
        for k in out:
            out[k].append(np.asarray(getattr(st, k)))
    return {k: np.stack(v) for k, v in out.items()}


# ----------------------------------------------------------------------------------------------
# NumPy references (float64), computed in the same run.


def numpy_frontier(lp0: np.ndarray, r: np.ndarray, betas: np.ndarray):
    """``(kl, gain)`` of the tilt at each beta: a direct softmax per beta (SciPy-free, float64)."""
    kl, gain = [], []
    p0 = np.exp(lp0)
    for b in betas:
        x = lp0 + r / b
        lp = x - (x.max() + np.log(np.exp(x - x.max()).sum()))
        p = np.exp(lp)
        kl.append(float(np.sum(p * (lp - lp0))))
        gain.append(float(p @ r - p0 @ r))
    return np.array(kl), np.array(gain)


def numpy_bon(lp0: np.ndarray, r: np.ndarray, n: int):
    """``(kl, gain)`` of best-of-n: levels by np.unique, mass F_j^n - F_{j-1}^n shared in proportion to pi0."""
    p0 = np.exp(lp0)
    levels, inv = np.unique(r, return_inverse=True)
    q = np.bincount(inv, weights=p0, minlength=len(levels))
    f = np.cumsum(q)
    mass = f**n - np.concatenate([[0.0], f[:-1]]) ** n
    p = p0 * (mass / q)[inv]
    nz = mass > 0
    return float(np.sum(mass[nz] * np.log(mass[nz] / q[nz]))), float(p @ r - p0 @ r)


# ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    existing = [f for f in OUTPUTS if (out / f).exists()]
    if existing and not args.force:
        print(f"error: {out} already holds {', '.join(existing)}; pass --force to overwrite", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_start = time.perf_counter()
    steps = 200 if args.quick else args.steps
    bed = tb.make_testbed(args.seed, args.vocab, args.length)
    bed32 = tb.make_testbed(args.seed, args.vocab, args.length, dtype=jnp.float32)
    task64, task32 = tb.make_task(bed), tb.make_task(bed32)
    lp0, gold = bed.log_probs, bed.rewards.gold
    S = args.vocab**args.length
    k_max = -float(jax.nn.logsumexp(jnp.where(gold == gold.max(), lp0, -jnp.inf)))
    print(f"testbed: V={args.vocab}, L={args.length}: {S} sequences, {tb.num_prefixes(args.vocab, args.length)} "
          f"prefixes; gold reward max {float(gold.max()):.3f} (base mean 0, sd 1); K_max = {k_max:.3f} nats")

    # -- the exact frontier, and the library's tilt on the exact law
    betas = np.geomspace(50.0, 0.01, 240)
    ex = tb.exact_frontier(lp0, gold, betas)
    lib = jl.tilt(tb.as_law(lp0, gold), betas)
    dev = max(float(jnp.max(jnp.abs(lib.kl[0] - ex.kl))), float(jnp.max(jnp.abs(lib.gain[0] - ex.gain))))
    np_kl, np_gain = numpy_frontier(np.asarray(lp0), np.asarray(gold), betas)
    dev_np = max(np.max(np.abs(np_kl - np.asarray(ex.kl))), np.max(np.abs(np_gain - np.asarray(ex.gain))))
    print(f"exact frontier: enumeration vs jaxlimits.tilt on the exact law, max |difference| = {dev:.2e}; "
          f"vs a NumPy softmax per beta: {dev_np:.2e}")

    # -- the frontier estimated from N base samples, with bootstrap bands
    estimates = {}
    for i, n_base in enumerate(args.base_samples):
        base, _ = tb.draw_samples(jax.random.PRNGKey(100 + i), lp0, gold, n_base)
        estimates[n_base] = jl.frontier(base, betas, bootstrap=50 if args.quick else 400,
                                        key=jax.random.PRNGKey(200 + i))

    # -- best-of-n, exactly
    ns = np.array([2**k for k in range(0, 15)])
    bon = tb.bon_point(lp0, gold, jnp.asarray(ns))
    np_bon = np.array([numpy_bon(np.asarray(lp0), np.asarray(gold), int(n)) for n in ns])
    dev_bon = max(np.max(np.abs(np_bon[:, 0] - np.asarray(bon.kl))),
                  np.max(np.abs(np_bon[:, 1] - np.asarray(bon.gain))))
    print(f"best-of-n: exact law vs a NumPy reference (np.unique levels), max |difference| = {dev_bon:.2e}")

    # -- trained runs
    print("training sweeps (float32 training, float64 exact evaluation):")
    t_train = time.perf_counter()
    rows, timings = run_sweeps(task32, task64, steps, args.quick)
    t_train = time.perf_counter() - t_train

    # -- efficiencies against the exact frontier: one call of the library's inversion
    kl_all = np.concatenate([[r["kl"] for r in rows], np.asarray(bon.kl)])
    gain_all = np.concatenate([[r["gain"] for r in rows], np.asarray(bon.gain)])
    eff = tb.efficiency(lp0, gold, kl_all, gain_all)
    re, ke = np.asarray(eff.reward_efficiency), np.asarray(eff.kl_efficiency)
    fg, fk = np.asarray(eff.frontier_gain), np.asarray(eff.frontier_kl)
    for i, r in enumerate(rows):
        r.update(frontier_gain=float(fg[i]), frontier_kl=float(fk[i]), reward_efficiency=float(re[i]),
                 kl_efficiency=float(ke[i]))
    nb = len(ns)
    bon_eff, bon_keff = re[-nb:], ke[-nb:]

    # -- estimator convergence
    est_betas = np.array([2.0, 1.0, 0.5, 0.25, 0.125])
    est_ns = [2**k for k in range(4, 16)]
    reps = 40 if args.quick else 200
    t_est = time.perf_counter()
    study = estimator_study(bed, est_betas, est_ns, reps, jax.random.PRNGKey(3))
    t_est = time.perf_counter() - t_est
    truth = tb.exact_frontier(lp0, gold, est_betas)

    # ------------------------------------------------------------------------------------------
    # Tables
    keys = ["algorithm", "policy", "kl_coef", "learning_rate", "seed", "steps", "groups", "group_size", "epochs",
            "minibatches", "kl", "gain", "frontier_gain", "frontier_kl", "reward_efficiency", "kl_efficiency"]
    with open(out / "efficiency.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(keys)
        for r in rows:
            w.writerow([r[k] for k in keys])
    with open(out / "bon.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["n", "kl_exact", "kl_analytic", "gain", "frontier_gain", "reward_efficiency", "kl_efficiency"])
        for i, n in enumerate(ns):
            w.writerow([int(n), float(bon.kl[i]), float(np.log(n) - (n - 1) / n), float(bon.gain[i]),
                        float(fg[-nb + i]), float(bon_eff[i]), float(bon_keff[i])])
    with open(out / "estimators.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["beta", "N", "exact_gain", "mean_gain", "rmse_gain", "exact_kl", "mean_kl", "rmse_kl",
                    "coverage_gain_1.96se", "coverage_kl_1.96se", "saturated_share"])
        for j, n in enumerate(est_ns):
            for b, beta in enumerate(est_betas):
                g, k = study["gain"][j, :, b], study["kl"][j, :, b]
                tg, tk = float(truth.gain[b]), float(truth.kl[b])
                cg = np.mean(np.abs(g - tg) <= 1.96 * study["gain_se"][j, :, b])
                ck = np.mean(np.abs(k - tk) <= 1.96 * study["kl_se"][j, :, b])
                w.writerow([beta, n, tg, g.mean(), np.sqrt(np.mean((g - tg) ** 2)), tk, k.mean(),
                            np.sqrt(np.mean((k - tk) ** 2)), cg, ck, study["saturated"][j, :, b].mean()])

    # Best run per algorithm (highest reward efficiency), and medians.
    best = {}
    for name in dict.fromkeys(r["algorithm"] for r in rows):
        mine = [r for r in rows if r["algorithm"] == name]
        top = max(mine, key=lambda r: r["reward_efficiency"])
        best[name] = {k: top[k] for k in ("kl_coef", "learning_rate", "seed", "kl", "gain", "reward_efficiency",
                                          "kl_efficiency")}
        best[name]["median_reward_efficiency"] = float(np.median([r["reward_efficiency"] for r in mine]))
        best[name]["median_kl_efficiency"] = float(np.median([r["kl_efficiency"] for r in mine]))
        best[name]["runs"] = len(mine)

    # ------------------------------------------------------------------------------------------
    # Figure 1
    colors = {"RLOO": "tab:blue", "PPO": "tab:orange", "GRPO": "tab:green", "RLOO (bigram policy)": "tab:purple"}
    markers = {"RLOO": "o", "PPO": "s", "GRPO": "^", "RLOO (bigram policy)": "D"}
    fig, ax = plt.subplots(figsize=(8.0, 6.0))
    kx, gx = np.asarray(ex.kl), np.asarray(ex.gain)
    top_kl = max(k_max * 1.02, float(np.max(kl_all)) * 1.05)
    kx_fill = np.append(kx, top_kl)
    gx_fill = np.append(gx, float(gold.max()))
    ax.fill_between(kx_fill, gx_fill, float(gold.max()) * 1.15, color="0.88", zorder=0, label="unreachable")
    ax.plot(kx, gx, color="black", lw=2, label="exact frontier (enumeration)", zorder=3)
    reds = ["tab:red", "darkred", "salmon", "firebrick"]
    for i, (n_base, est) in enumerate(estimates.items()):
        c = reds[i % len(reds)]
        ek, eg = np.asarray(est.kl), np.asarray(est.gain)
        ok = ~np.asarray(est.saturated)
        ax.plot(np.where(ok, ek, np.nan), np.where(ok, eg, np.nan), color=c, lw=1.6, zorder=4,
                label=f"estimated from N={n_base} base samples ({int(est.bands.level * 100)}% bootstrap band)")
        ax.plot(np.where(~ok, ek, np.nan), np.where(~ok, eg, np.nan), color=c, lw=1.2, ls="--", zorder=4,
                label=f"N={n_base}, flagged by the saturation rule")
        ax.fill_between(ek, np.asarray(est.bands.gain_lo), np.asarray(est.bands.gain_hi), color=c, alpha=0.15,
                        zorder=2)
        ax.axvline(np.log(n_base), color=c, lw=0.8, ls=":", zorder=1)
        ax.text(np.log(n_base), float(gold.max()) * 1.08, f" log {n_base}", color=c, fontsize=7, va="top")
    bk, bg = np.asarray(bon.kl), np.asarray(bon.gain)
    ax.plot(bk, bg, "k*", ms=9, label="best-of-n (exact)", zorder=5)
    for i, n in enumerate(ns):
        if n in (2, 8, 32, 128, 512, 2048, 8192):
            ax.annotate(f"n={n}", (bk[i], bg[i]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    for name in colors:
        mine = [r for r in rows if r["algorithm"] == name]
        ax.scatter([r["kl"] for r in mine], [r["gain"] for r in mine], s=14, alpha=0.35, color=colors[name],
                   marker=markers[name], zorder=4)
        b = best[name]
        ax.scatter([b["kl"]], [b["gain"]], s=60, color=colors[name], marker=markers[name], edgecolor="black",
                   zorder=6, label=f"{name} (best: {b['reward_efficiency']:.3f} of frontier)")
    ax.set_xlim(0, top_kl)
    ax.set_ylim(0, float(gold.max()) * 1.1)
    ax.set_xlabel("KL(pi || pi0), nats (exact, sequence level)")
    ax.set_ylabel("gain in gold reward, E_pi[r] - E_pi0[r] (base sd = 1)")
    ax.set_title(f"Exact testbed: V={args.vocab}, L={args.length} ({S} sequences)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "fig1_frontier.png", dpi=140)
    plt.close(fig)

    # Figures 2 and 3
    cmap = plt.get_cmap("viridis")
    for fname, key, label in (("fig2_gain_vs_n.png", "gain", "gain"), ("fig3_kl_vs_n.png", "kl", "KL")):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
        for b, beta in enumerate(est_betas):
            c = cmap(b / max(1, len(est_betas) - 1))
            vals = study[key][:, :, b]
            t = float(getattr(truth, key)[b])
            lo, mid, hi = np.percentile(vals, [10, 50, 90], axis=1)
            a1.plot(est_ns, mid, color=c, marker="o", ms=3, label=f"beta={beta:g}")
            a1.fill_between(est_ns, lo, hi, color=c, alpha=0.2)
            a1.axhline(t, color=c, ls="--", lw=0.8)
            rmse = np.sqrt(np.mean((vals - t) ** 2, axis=1)) / abs(t)
            sat = study["saturated"][:, :, b].mean(axis=1) > 0.5
            a2.plot(est_ns, rmse, color=c, lw=1)
            a2.scatter(np.array(est_ns)[~sat], rmse[~sat], color=c, s=14)
            a2.scatter(np.array(est_ns)[sat], rmse[sat], facecolor="none", edgecolor=c, s=14)
        if key == "kl":
            a1.plot(est_ns, np.log(est_ns), color="0.4", lw=0.8, ls=":", label="log N (ceiling)")
        guide = np.array(est_ns, float)
        a2.plot(guide, 2.0 / np.sqrt(guide), color="0.5", ls=":", lw=0.8, label="N^-1/2")
        a1.set_xscale("log", base=2)
        a1.set_xlabel("N base samples")
        a1.set_ylabel(f"estimated {label}")
        a1.set_title(f"median and 10-90% over {reps} replicates; exact dashed", fontsize=9)
        a1.legend(fontsize=7)
        a2.set_xscale("log", base=2)
        a2.set_yscale("log")
        a2.set_xlabel("N base samples")
        a2.set_ylabel(f"relative RMSE of the {label} estimate")
        a2.set_title("hollow: flagged by the saturation rule in most replicates", fontsize=9)
        a2.legend(fontsize=7)
        which = "Figure 2: the gain estimator (Def. 1)" if key == "gain" else "Figure 3: the KL estimator (Def. 2)"
        fig.suptitle(f"{which} against N on the exact testbed (V={args.vocab}, L={args.length})")
        fig.tight_layout()
        fig.savefig(out / fname, dpi=140)
        plt.close(fig)

    total = time.perf_counter() - t_start
    summary = {
        "testbed": dict(vocab_size=args.vocab, length=args.length, seed=args.seed, sequences=S,
                        prefixes=tb.num_prefixes(args.vocab, args.length), reward="gold", k_max=k_max,
                        gain_max=float(gold.max())),
        "exact_vs_library_tilt_max_abs_diff": dev,
        "exact_vs_numpy_frontier_max_abs_diff": float(dev_np),
        "bon_vs_numpy_max_abs_diff": float(dev_bon),
        "base_samples": list(args.base_samples),
        "sweeps": {name: dict(setup=static, kl_coef=coefs, learning_rate=lrs, seeds=seeds, steps=steps,
                              optimizer="adam (optax), learning rate decayed linearly to 0",
                              policy_init="the base model")
                   for name, (static, coefs, lrs, seeds) in sweep_grid(args.quick).items()},
        "best_runs": best,
        "bon": {int(n): dict(kl=float(bon.kl[i]), gain=float(bon.gain[i]), reward_efficiency=float(bon_eff[i]),
                             kl_efficiency=float(bon_keff[i])) for i, n in enumerate(ns)},
        "seconds": dict(total=total, training=t_train, per_sweep=timings, estimators=t_est),
        "machine": dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count(),
                        jax=jax.__version__, device=str(jax.devices()[0])),
    }
    with open(out / "summary.json", "w") as fh:
        json.dump(summary, fh, indent=2)

    print("\nbest-of-n (exact law) against the exact frontier:")
    print("      n   KL exact  log n-(n-1)/n    gain  frontier  reward eff  KL eff")
    for i, n in enumerate(ns):
        print(f"  {int(n):5d}  {float(bon.kl[i]):8.4f}  {np.log(n) - (n - 1) / n:13.4f}  {float(bon.gain[i]):6.3f}"
              f"  {float(fg[-nb + i]):8.3f}  {bon_eff[i]:10.4f}  {bon_keff[i]:6.4f}")
    print("\ntrained runs against the exact frontier (best run by reward efficiency; medians over the sweep):")
    print(f"  {'algorithm':22s} {'runs':>4s} {'kl_coef':>7s} {'lr':>5s}  {'KL':>6s} {'gain':>6s}  {'reward eff':>10s}"
          f" {'KL eff':>7s}  {'median reward eff':>17s} {'median KL eff':>13s}")
    for name, b in best.items():
        print(f"  {name:22s} {b['runs']:4d} {b['kl_coef']:7.3g} {b['learning_rate']:5.3g}  {b['kl']:6.3f}"
              f" {b['gain']:6.3f}  {b['reward_efficiency']:10.4f} {b['kl_efficiency']:7.4f}"
              f"  {b['median_reward_efficiency']:17.4f} {b['median_kl_efficiency']:13.4f}")
    cpu = platform.processor() or platform.machine()
    print(f"\nwrote {', '.join(OUTPUTS)} to {out}; {total:.0f} s in total on {cpu} ({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
