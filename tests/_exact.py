"""Ground truth for the tests: tilted statistics of a finite law or sample in 50-digit arithmetic."""

from __future__ import annotations

import mpmath as mp
import numpy as np

mp.mp.dps = 50


def tilted(values, weights, beta, scores=None, counts=None):
    """Exact tilted statistics of rows ``values`` with base weights ``weights`` (not normalised).

    With ``counts`` the rows are draws with multiplicities (``weights`` are then per-draw importance
    weights); the standard errors follow MATH.md §3 (counts: expanded sample; weights: SNIS).
    Returns a dict of floats.
    """
    n = len(values)
    s = values if scores is None else scores
    m = np.ones(n) if counts is None else np.asarray(counts, dtype=float)
    lam = mp.mpf(1) / mp.mpf(float(beta))
    r = [mp.mpf(float(v)) for v in values]
    s = [mp.mpf(float(v)) for v in s]
    v = [mp.mpf(float(w)) * mp.mpf(float(c)) for w, c in zip(weights, m)]
    big_w = mp.fsum(v)
    u = [x / big_w for x in v]
    e = [ui * mp.e ** (lam * ri) for ui, ri in zip(u, r)]
    z = mp.fsum(e)
    p = [x / z for x in e]
    mu_s, mu_r = mp.fsum(pi * si for pi, si in zip(p, s)), mp.fsum(pi * ri for pi, ri in zip(p, r))
    base_s, base_r = mp.fsum(ui * si for ui, si in zip(u, s)), mp.fsum(ui * ri for ui, ri in zip(u, r))
    kl = mp.fsum(pi * mp.log(pi / ui) for pi, ui in zip(p, u) if pi > 0)
    rkl = mp.fsum(ui * mp.log(ui / pi) for pi, ui in zip(p, u) if ui > 0)
    var_r = mp.fsum(pi * (ri - mu_r) ** 2 for pi, ri in zip(p, r))
    cov = mp.fsum(pi * (ri - mu_r) * (si - mu_s) for pi, ri, si in zip(p, r, s))
    w2 = [ui * ui / mp.mpf(float(c)) for ui, c in zip(u, m)]
    rho = [pi / ui for pi, ui in zip(p, u)]
    psi_g = [q * (si - mu_s) - (si - base_s) for q, si in zip(rho, s)]
    psi_k = [q * lam * (ri - mu_r) - (q - 1) for q, ri in zip(rho, r)]
    psi_r = [(q - 1) - lam * (ri - base_r) for q, ri in zip(rho, r)]
    var = lambda psi: mp.fsum(w * x * x for w, x in zip(w2, psi))  # noqa: E731
    ess = 1 / mp.fsum(pi * pi / mp.mpf(float(c)) for pi, c in zip(p, m))
    return {
        "log_z": float(mp.log(z)),
        "gain": float(mu_s - base_s),
        "kl": float(kl),
        "reverse_kl": float(rkl),
        "jeffreys": float(kl + rkl),
        "mean_r": float(mu_r),
        "var_r": float(var_r),
        "cov_sr": float(cov),
        "ess": float(ess),
        "gain_se": float(mp.sqrt(var(psi_g))),
        "kl_se": float(mp.sqrt(var(psi_k))),
        "reverse_kl_se": float(mp.sqrt(var(psi_r))),
    }
