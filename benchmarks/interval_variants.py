"""One prompt's 95% interval three ways, by simulation: as reported, on the log scale, skew-corrected.

For a reward law of ``calibrate_trust.py`` (truth in closed form), sample size N and its 12 betas,
``--reps`` independent prompts are estimated with ``jl.tilt`` (float64: the bias-corrected gain and
KL and their delta-method SEs); then, per beta, the share of all data sets (flagged or not) whose
interval holds the truth:

* ``reported``: ``estimate +- 1.96 se``, what the library reports;
* ``log``: ``estimate * exp(+-1.96 se / estimate)`` (gain and KL are positive), the classical
  repair for variance-like estimates;
* ``skew``: both limits moved by ``se * g * (2 z^2 + 1) / 6`` (Hall 1992; Johnson 1978, for a
  mean), ``g = sum psi^3 / (sum psi^2)^(3/2)`` from each prompt's plug-in influence values
  ``psi`` (gain: ``w (r - mu_p) / mean w - (r - rbar)``; KL: ``lam w (r - mu_p) / mean w - (w -
  mean w) / mean w``), as third-order sums of the kernel would give it.

Run:  python benchmarks/interval_variants.py [--laws exponential gumbel normal] [--sizes 256 1024]
      [--reps 10000]
The figures of 2026-11-30 are in benchmarks/README.md ("three repairs for P = 1 and P = 100").
"""

from __future__ import annotations

import argparse

import calibrate_trust as ct  # benchmarks/ is the script's directory
import jax
import numpy as np

import jaxlimits as jl

Z = ct.Z95


def influence(r: np.ndarray, lam: float):
    """Plug-in influence values of the gain and the KL, each ``[reps, N]``."""
    w = np.exp(lam * (r - r.max(1, keepdims=True)))
    w_bar = w.mean(1, keepdims=True)
    mu = (w * r).sum(1, keepdims=True) / w.sum(1, keepdims=True)
    gain = w * (r - mu) / w_bar - (r - r.mean(1, keepdims=True))
    kl = lam * w * (r - mu) / w_bar - (w - w_bar) / w_bar
    return gain, kl


def coverages(est, se, truth, psi) -> tuple[float, float, float]:
    """Shares of ``reported``, ``log`` and ``skew`` intervals that hold ``truth``."""
    reported = np.abs(est - truth) <= Z * se
    with np.errstate(all="ignore"):
        h = Z * se / est
        log = (est > 0) & (est * np.exp(-h) <= truth) & (truth <= est * np.exp(h))
    g = (psi**3).sum(1) / (psi**2).sum(1) ** 1.5
    skew = np.abs(est + se * g * (2 * Z**2 + 1) / 6 - truth) <= Z * se
    return reported.mean(), log.mean(), skew.mean()


def run(law: str, n: int, reps: int, seed: int = 0) -> list[str]:
    betas = ct.beta_grid(law, n, 12)
    g_true, k_true = ct.truth(law, betas)
    r = np.asarray(ct.draw(law, jax.random.key(seed + n), (reps, n), np.float64))
    st = jl.tilt(jl.Samples(r), betas)
    lines = []
    for b, beta in enumerate(betas):
        psi_g, psi_k = influence(r, 1 / beta)
        cg = coverages(np.asarray(st.gain)[:, b], np.asarray(st.gain_se)[:, b], g_true[b], psi_g)
        ck = coverages(np.asarray(st.kl)[:, b], np.asarray(st.kl_se)[:, b], k_true[b], psi_k)
        kept = float(np.mean(np.asarray(st.reasons)[:, b] == 0))
        lines.append(f"| {law} | {n} | {k_true[b]:.4f} | {cg[0]:.3f} / {ck[0]:.3f} | {cg[1]:.3f} / {ck[1]:.3f} | "
                     f"{cg[2]:.3f} / {ck[2]:.3f} | {kept:.2f} |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--laws", nargs="+", default=["exponential", "gumbel", "normal"],
                    choices=[law for law in ct.LAWS if law != "student_t3"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[256, 1024])
    ap.add_argument("--reps", type=int, default=10000)
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    print("| law | N | KL | reported (gain / KL) | log scale | skew-corrected | unflagged |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for law in args.laws:
        for n in args.sizes:
            print("\n".join(run(law, n, args.reps)), flush=True)


if __name__ == "__main__":
    main()
