"""The paper's Figure 1 for your own model and reward: the frontier, what lies above it, and who is where.

Needs matplotlib (``pip install 'jaxlimits[plot]'``), imported only when a figure is drawn. The
figure is built on matplotlib's Agg canvas directly (no ``pyplot``, no display, the global backend
untouched), so it renders the same in a terminal, in CI and in a notebook.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from . import estimators, tail_bound
from .samples import Samples

#: Above this many runs they are drawn as one connected series (a training trajectory).
MAX_LABELLED_RUNS = 8

_MARKERS = ("s", "^", "D", "v", "P", "X", "<", ">")
#: Not blue (the band), orange (best-of-n) or purple (a tail model).
_RUN_COLOURS = ("C3", "C2", "C5", "C6", "C7", "C8", "C9", "C0")


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - the test extra installs matplotlib
        raise ImportError("jaxlimits.plot needs matplotlib: pip install 'jaxlimits[plot]'") from None
    return Figure, FigureCanvasAgg


def _runs_xy(runs) -> dict[str, Any]:
    """Names, sequence KL, gains and their SEs of a Comparison or a list of Runs (host arrays)."""
    from .compare import Comparison, check_run, sequence_kl

    if isinstance(runs, Comparison):
        return {
            "names": list(runs.names),
            "kl": np.asarray(runs.kl, float),
            "gain": np.asarray(runs.gain, float),
            "kl_se": np.asarray(runs.kl_se, float),
            "gain_se": np.asarray(runs.gain_se, float),
            "lower": np.asarray(runs.lower_bound, bool),
        }
    checked = [check_run(i, r) for i, r in enumerate(runs)]
    seq = [sequence_kl(r) for r in checked]
    return {
        "names": [r.name for r in checked],
        "kl": np.array([s[0] for s in seq]),
        "gain": np.array([float(r.gain) for r in checked]),
        "kl_se": np.array([s[1] for s in seq]),
        "gain_se": np.array([float(r.gain_se) for r in checked]),
        "lower": np.zeros(len(checked), bool),
    }


def tail_band(tail, kl, *, frontier=None, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The frontier's gain at each KL as the tail model allows it: ``(lo, hi)``, each ``[K]``.

    At each beta the tilted policy lies in a box ``[kl_lo, kl_hi] x [gain_lo, gain_hi]``: the
    model's intervals (:class:`jaxlimits.TailCurve`), or, given the measured ``frontier``, its own
    at its trusted betas (``+- z SE`` at ``level``, or its bootstrap band) and the model's only at
    the betas below them. KL and gain grow as beta falls, so the policy whose KL is ``x`` lies
    between two neighbouring betas ``b1 > b2``: where their boxes reach ``x`` (``kl_lo(b1) <= x <=
    kl_hi(b2)``) its gain is in ``[gain_lo(b1), gain_hi(b2)]``; the band is the union of these over
    the neighbouring pairs (and single boxes). ``hi`` is ``inf`` where a box is open above; both
    are NaN where nothing reaches ``x``. NaN limits count as open. Given a measured ``frontier``
    (``extrapolated`` None), at KLs at or past its ``kl_ceiling`` ``lo`` is at least its largest
    gain (the samples' cap, approached by its last point: the bound ``invert`` and ``compare`` use
    there), never above ``hi``.

    Args:
      tail: a :class:`jaxlimits.TailCurve` (pooled fields ``[B]``, any order of betas).
      kl: ``[K]`` KLs in nats per sequence.
      frontier: optional measured :class:`jaxlimits.Frontier` whose trusted points stand for
        themselves (the figure's case).
      level: of the measured boxes without a bootstrap band.
    """
    q = {f: np.asarray(getattr(tail, f), float) for f in ("betas", "kl_lo", "kl_hi", "gain_lo", "gain_hi")}
    if frontier is not None:
        trusted = ~np.asarray(frontier.saturated, bool)
        fb = np.asarray(frontier.betas, float)[trusted]
        keep = q["betas"] < fb.min(initial=np.inf)
        z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
        own = {}
        for v in ("kl", "gain"):
            mid, se = np.asarray(getattr(frontier, v), float), np.asarray(getattr(frontier, f"{v}_se"), float)
            lo_hi = ((np.asarray(getattr(frontier.bands, f"{v}_lo"), float), np.asarray(getattr(frontier.bands,
                      f"{v}_hi"), float)) if frontier.bands is not None else (mid - z * se, mid + z * se))
            own[f"{v}_lo"], own[f"{v}_hi"] = (w[trusted] for w in lo_hi)
        q = {f: np.concatenate([fb if f == "betas" else own[f], q[f][keep]]) for f in q}
    by = np.argsort(-q["betas"])  # KL increasing
    k_lo, k_hi = np.where(np.isnan(q["kl_lo"]), -np.inf, q["kl_lo"])[by], np.where(np.isnan(q["kl_hi"]), np.inf,
                                                                                   q["kl_hi"])[by]
    g_lo, g_hi = np.where(np.isnan(q["gain_lo"]), -np.inf, q["gain_lo"])[by], np.where(np.isnan(q["gain_hi"]),
                                                                                       np.inf, q["gain_hi"])[by]
    # single boxes, then neighbouring pairs (the larger beta's lower limits, the smaller's upper ones)
    reach = (np.concatenate([k_lo, k_lo[:-1]]), np.concatenate([k_hi, k_hi[1:]]))
    gain = (np.concatenate([g_lo, g_lo[:-1]]), np.concatenate([g_hi, g_hi[1:]]))
    x = np.asarray(kl, float)[:, None]
    hits = (reach[0] <= x) & (x <= reach[1])  # [K, boxes]
    none = ~hits.any(axis=1)
    lo = np.min(np.where(hits, gain[0], np.inf), axis=1)
    hi = np.max(np.where(hits, gain[1], -np.inf), axis=1)
    lo, hi = np.where(none, np.nan, lo), np.where(none, np.nan, hi)
    ceiling = getattr(frontier, "kl_ceiling", None)
    if frontier is not None and getattr(frontier, "extrapolated", None) is None and ceiling is not None:
        # at or past the samples' ceiling the frontier is at least the largest gain they show (what invert and
        # compare bound it by there; the measured frontier's last point approaches it from below)
        cap = np.asarray(frontier.gain, float)
        cap = float(np.max(cap[np.isfinite(cap)], initial=-np.inf))
        past = (np.asarray(kl, float) >= float(ceiling)) & np.isfinite(lo)
        lo = np.where(past, np.fmax(lo, np.fmin(cap, hi)), lo)
    return lo, hi


def _extrapolated_points(frontier, tail) -> np.ndarray:
    """``[betas]``: where the tail model takes over from the measured points (none without a model).

    A frontier from ``frontier(tail="gpd")`` says it (``extrapolated``); a measured frontier drawn
    with ``tail=`` takes the same rule (:func:`jaxlimits.tail.beyond_samples`: flagged ``ceiling``,
    or no finite value).
    """
    from .tail import beyond_samples

    if frontier.extrapolated is not None:
        return np.asarray(frontier.extrapolated, bool)
    if tail is None:
        return np.zeros(np.shape(frontier.betas), bool)
    return beyond_samples(frontier.reasons, frontier.gain, frontier.kl)


def _model_points(tail, beta_max: float):
    """The tail model's point curve ``(kl, gain)`` at its betas below ``beta_max``, by KL; or None.

    Betas where the model has no tilt (NaN) are left out."""
    kl, gain = np.asarray(tail.kl, float), np.asarray(tail.gain, float)
    ok = np.isfinite(kl) & np.isfinite(gain) & (np.asarray(tail.betas, float) < beta_max)
    if not ok.any():
        return None
    srt = np.argsort(kl[ok])
    return kl[ok][srt], gain[ok][srt]


def frontier_figure(
    frontier,
    *,
    bon=None,
    runs=None,
    tail=None,
    path: str | Path | None = None,
    ax=None,
    title: str | None = None,
    reward_label: str = "reward",
    score_label: str | None = None,
    level: float = 0.95,
    xscale: str = "auto",
    xmax: float | str | None = None,
    use_scores: bool = False,
    num_betas: int = 64,
    figsize: tuple[float, float] | None = None,
    dpi: int = 150,
):
    """The KL-reward frontier with best-of-n and alignment runs against it (the paper's Figure 1).

    Drawn: the measured frontier (the optimal KL-regularised policies) from ``(0, 0)``: solid where
    the trust rule passes, dashed where it does not (the legend names the reasons:
    ``Frontier.reasons``); its uncertainty band; the unreachable region (grey) above the upper
    confidence limit of the trusted points only; the sample ceiling ``mean_x log(N/m)`` (dotted);
    best-of-n points labelled by ``n``; and run points with error bars. KL in nats per sequence,
    gain in reward units.

    With a tail model (``tail``, or the frontier's own from ``frontier(tail="gpd")``), where
    extrapolation starts (past the measured points the model does not replace: those not flagged
    ``ceiling`` and with a value, :func:`jaxlimits.tail.beyond_samples`; a point flagged for
    other reasons stays a dashed measured point): the model's interval of the frontier's gain at
    each KL as a hatched purple band (:func:`tail_band`, what ``max_gain_at_kl(..., tail="gpd")``
    answers; hatched to the top where it is open above), and its point curve dash-dotted purple
    at the extrapolated betas (none where its fitted tail has no tilt): a model, never drawn like
    the measured curve. A frontier from ``frontier(tail="gpd")`` no longer holds the measured
    values of its extrapolated points, so they are not drawn; pass the frontier without a tail
    model and ``tail=`` to draw both.
    Where the KLs shown span decades, ``xscale="auto"`` takes a symlog axis.

    When the curve's gain is measured with a score other than the reward (``score_label``), it is
    the score of the policies tilted toward the reward, not a frontier of the score: it is
    labelled so, and nothing above it is shaded as unreachable.

    Args:
      frontier: a :class:`jaxlimits.Frontier`, or :class:`jaxlimits.Samples` to compute one
        (``num_betas`` points, rewards only unless ``use_scores``).
      bon: optional :class:`jaxlimits.BestOfN` (plotted at its ``kl`` and ``reward_gain``; its
        ``gain`` with ``use_scores``).
      runs: optional :class:`jaxlimits.Comparison` or list of :class:`jaxlimits.Run` (per-token
        KL converted as the run says).
      tail: optional :class:`jaxlimits.TailCurve` (``jaxlimits.tail_curve`` of the same samples,
        at any betas) drawn past the trusted frontier; default: ``frontier.tail``.
      path: save the figure there (PNG, PDF or SVG by suffix).
      ax: draw into this matplotlib Axes instead of a new figure.
      title: the axes' title.
      reward_label: what the reward is called (legend, y axis and its units).
      score_label: what the score is called when the curve's gain is measured with a score that
        is not the reward (default: ``"score"`` for samples with scores drawn with
        ``use_scores``, else None: the curve is the reward's frontier).
      level: coverage of the band (bootstrap bands when the frontier has them, else
        ``+- z SE``).
      xscale: ``"linear"``, ``"symlog"`` or ``"auto"`` (symlog when points lie far beyond the
        frontier's KL range, e.g. a run whose KL is many times the sample ceiling, or, with a
        tail model, when the KLs shown span more than two decades). Symlog is linear up to the
        sample ceiling, or, with a tail model, up to the smallest KL's decade.
      xmax: right end of the KL axis: nats, ``"full"`` (the frontier to the sample ceiling), or
        None (default): the extent of the runs and best-of-n points when there are any, else
        ``"full"``.
      use_scores: with samples that carry separate scores, draw the gain measured with them
        (the default draws the frontier of the rewards, what the runs are compared with).
      num_betas: points of the frontier computed from samples.
      figsize, dpi: of a new figure (default size 7.5 x 5 inches; 7.5 x 6.4 with a tail model, whose
        legend goes below the axes).

    Returns:
      The matplotlib ``Figure``.

    Examples:
      >>> import numpy as np, jaxlimits as jl
      >>> from jaxlimits import plot
      >>> s = jl.Samples(np.random.default_rng(0).standard_normal((20, 256)))
      >>> fig = plot.frontier_figure(s, runs=[jl.Run("ppo", kl=0.5, gain=0.4)])
      >>> fig.axes[0].get_xlabel()
      'KL(π ‖ π₀)  [nats per sequence]'
    """
    from .frontier import Frontier
    from .frontier import frontier as compute_frontier

    Figure, FigureCanvasAgg = _matplotlib()
    if isinstance(frontier, Samples):
        s = frontier if use_scores else frontier.replace(scores=None)
        if s.has_scores and score_label is None:
            score_label = "score"
        frontier = compute_frontier(s, num_betas=num_betas, per_prompt=False)
    if not isinstance(frontier, Frontier):
        raise TypeError(
            f"frontier_figure: frontier must be a jaxlimits.Frontier or Samples, got {type(frontier).__name__}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if xscale not in ("auto", "linear", "symlog"):
        raise ValueError(f"xscale must be 'auto', 'linear' or 'symlog', got {xscale!r}")
    from .tail import TailCurve

    tail = frontier.tail if tail is None else tail
    if tail is not None and not isinstance(tail, TailCurve):
        raise TypeError(f"frontier_figure: tail must be a jaxlimits.TailCurve, got {type(tail).__name__}")
    if not (xmax is None or xmax == "full" or (isinstance(xmax, (int, float)) and np.isfinite(xmax) and xmax > 0)):
        raise ValueError(f"xmax must be a positive number of nats, 'full' or None, got {xmax!r}")

    if ax is None:
        size = figsize or ((7.5, 5.0) if tail is None else (7.5, 6.4))
        fig = Figure(figsize=size, dpi=dpi, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig = ax.figure

    kl = np.asarray(frontier.kl, float)
    gain = np.asarray(frontier.gain, float)
    sat = np.asarray(frontier.saturated, bool)
    # points from the tail model (frontier(tail="gpd")) are not measured: drawn apart (the model's band)
    ext = np.zeros(len(kl), bool) if frontier.extrapolated is None else np.asarray(frontier.extrapolated, bool)
    measured = np.flatnonzero(~ext)
    order = measured[np.argsort(kl[measured])]
    kl, gain, sat = kl[order], gain[order], sat[order]
    # beta -> infinity is the base policy itself: KL 0, gain 0, exactly (no uncertainty)
    start = not (len(kl) and kl[0] == 0.0)
    kl, gain = (np.concatenate([[0.0], kl]), np.concatenate([[0.0], gain])) if start else (kl, gain)
    sat = np.concatenate([sat[:1], sat]) if start else sat  # drawn like the first point
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    if frontier.bands is not None:
        lo = np.asarray(frontier.bands.gain_lo, float)[order]
        hi = np.asarray(frontier.bands.gain_hi, float)[order]
        lo, hi = (np.concatenate([[0.0], lo]), np.concatenate([[0.0], hi])) if start else (lo, hi)
        band_label = f"{frontier.bands.level:.0%} bootstrap band"
    elif abs(level - tail_bound.LEVEL) < 1e-12:  # the reported interval
        lo, hi = (np.asarray(getattr(frontier, f), float)[order] for f in ("gain_lo", "gain_hi"))
        lo, hi = (np.concatenate([[0.0], lo]), np.concatenate([[0.0], hi])) if start else (lo, hi)
        band_label = f"{level:.0%} interval (upper limit allows for an unseen tail)"
    else:
        se = np.asarray(frontier.gain_se, float)[order]
        se = np.concatenate([[0.0], se]) if start else se
        lo, hi = gain - z * se, gain + z * se
        band_label = f"{level:.0%} band (±{z:.2f} SE)"
    ceiling = float(np.asarray(frontier.kl_ceiling))

    # The extent of the points (runs, best-of-n) and of the frontier.
    pts_x, pts_y = [], []
    bon_xy = None
    if bon is not None:
        bg = np.asarray(bon.gain if use_scores else bon.reward_gain, float)
        bse = np.asarray(bon.gain_se if use_scores else bon.reward_gain_se, float)
        bon_xy = (np.asarray(bon.kl, float), bg, np.nan_to_num(bse), np.asarray(bon.n))
        pts_x.append(bon_xy[0])
        pts_y.append(bg + bon_xy[2])
    run_xy = _runs_xy(runs) if runs is not None else None
    if run_xy is not None:
        pts_x.append(run_xy["kl"] + run_xy["kl_se"])
        pts_y.append(run_xy["gain"] + run_xy["gain_se"])
    px = np.concatenate([np.ravel(x) for x in pts_x]) if pts_x else np.zeros(0)
    px = px[np.isfinite(px)]
    # The tail model where extrapolation starts: past the measured points it does not replace (trusted, or
    # flagged inside the samples' ceiling: they answer for themselves), its point curve at the betas below
    # theirs and its band from where their KLs (and the trusted points' KL intervals) end.
    f_ok = ~np.asarray(frontier.saturated, bool)
    f_kl_hi = (np.asarray(frontier.bands.kl_hi, float)[f_ok] if frontier.bands is not None else
               np.asarray(frontier.kl_hi, float)[f_ok] if abs(level - tail_bound.LEVEL) < 1e-12 else
               np.asarray(frontier.kl, float)[f_ok] + z * np.asarray(frontier.kl_se, float)[f_ok])
    stands = ~_extrapolated_points(frontier, tail)
    kl_stands = np.asarray(frontier.kl, float)[stands]
    band_from = max(float(np.max(kl_stands[np.isfinite(kl_stands)], initial=0.0)),
                    float(np.max(f_kl_hi[np.isfinite(f_kl_hi)], initial=0.0)))
    trusted_beta = float(np.asarray(frontier.betas, float)[f_ok].min(initial=np.inf))
    model = None if tail is None else _model_points(tail, float(np.asarray(frontier.betas, float)[stands].min(
        initial=np.inf)))
    # the KLs it reaches: its points, and its boxes' lower KL limits
    tail_x = [] if tail is None else [np.asarray(tail.kl_lo, float)[np.asarray(tail.betas, float) < trusted_beta]]
    tail_x = [x[np.isfinite(x)] for x in tail_x + ([model[0]] if model else [])]
    full = max(float(np.nanmax(np.concatenate([kl, [ceiling], *tail_x]))) * 1.06,
               float(px.max(initial=0.0)) * 1.15)  # the points' own margin: a marker at the edge is not cut
    if xmax == "full" or (xmax is None and not (px > 0).any()):
        x_max = full
    elif xmax is None:  # default to the data: the points, with a margin
        x_max = min(float(px.max()) * 1.15, full)
    else:
        x_max = float(xmax)
    # the frontier up to the right end (and its next point, which the line runs to)
    shown = np.arange(len(kl)) <= np.searchsorted(kl, x_max)
    band_xy = None
    if tail is not None and x_max > band_from:
        start = np.nextafter(band_from, np.inf)  # past the trusted points' KL intervals, not on their edge
        x_band = np.unique(np.concatenate([np.linspace(start, x_max, 200),
                                           np.geomspace(max(start, x_max * 1e-4), x_max, 200)]))
        band_xy = (x_band, *tail_band(tail, x_band, frontier=frontier, level=level))
        if not np.isfinite(band_xy[1]).any():
            band_xy = None
    tail_y = [] if model is None else [model[1][model[0] <= x_max]]
    tail_y += [] if band_xy is None else [band_xy[1], band_xy[2]]
    y_all = np.concatenate([hi[shown], gain[shown], [0.0]] + [np.ravel(y) for y in pts_y] + tail_y)  # (hi may be inf)
    y_all = y_all[np.isfinite(y_all)]
    lo_shown = lo[shown][np.isfinite(lo[shown])]
    y_lo = min(0.0, float(np.min(np.concatenate([lo_shown, y_all]))))
    y_top = float(np.nanmax(y_all))
    y_max = y_top + 0.12 * max(y_top - y_lo, 1e-12)
    y_min = y_lo - 0.07 * max(y_top - y_lo, 1e-12)
    kl_pos = kl[(kl > 0) & shown]
    decades = tail is not None and len(kl_pos) > 0 and x_max > 100 * float(kl_pos.min())
    if xscale == "auto":
        xscale = "symlog" if decades or x_max > 4 * max(float(kl.max(initial=0.0)), ceiling) else "linear"

    # The band, the curve (trusted / saturated), the unreachable region.
    hi = np.minimum(hi, y_max)  # an open upper limit (the tail model's tilt may not exist) runs off the top
    ax.fill_between(kl, lo, hi, color="tab:blue", alpha=0.25, linewidth=0, label=band_label, zorder=2)
    is_frontier = score_label is None
    curve = ("frontier (optimal policy)" if is_frontier
             else f"{score_label} gain of the policy aligned to {reward_label} (not a {score_label} frontier)")
    # One encoding for trust: solid where the estimate can be trusted, dashed where it cannot
    # (with the reasons in the legend). "Unreachable" is shaded only above the upper confidence
    # limit of trusted points: above an untrusted estimate nobody knows.
    trusted = ~sat
    solid = np.where(trusted, gain, np.nan)
    near = sat | np.concatenate([sat[1:], [False]]) | np.concatenate([[False], sat[:-1]])
    dashed = np.where(near, gain, np.nan)
    if trusted.any():
        ax.plot(kl, solid, color="black", lw=2, label=curve, zorder=4)
    if sat.any():
        codes = np.asarray(frontier.reasons, int)[order]
        why = estimators.reason_names(np.bitwise_or.reduce(codes[codes != 0])) if (codes != 0).any() else ""
        what = "frontier" if is_frontier else curve if not trusted.any() else f"{score_label} gain"
        ax.plot(kl, dashed, color="black", lw=1.6, ls="--", zorder=4,
                label=f"{what}, not trustworthy ({why.replace('+', ', ')})" if why else f"{what}, not trustworthy")
    if is_frontier and trusted.any():  # only a true frontier, and only where it is known, bounds what is reachable
        ax.fill_between(kl, np.where(trusted, hi, np.nan), np.full_like(gain, y_max), color="0.55", alpha=0.35,
                        linewidth=0, label="unreachable (above the trusted frontier's upper confidence limit)",
                        zorder=1)
    if ceiling <= x_max:  # (off the axis, its legend entry would name a line nobody sees)
        ax.axvline(ceiling, color="0.3", ls=":", lw=1.2, label=f"sample ceiling mean log(N/m) = {ceiling:.3g} nats",
                   zorder=3)
    if band_xy is not None:  # a model, not a measurement: hatched, never like the measured band
        bx, blo, bhi = band_xy
        open_above = bool(np.any(np.isposinf(bhi) & np.isfinite(blo)))
        ax.fill_between(bx, blo, np.minimum(bhi, y_max), facecolor=(0.58, 0.4, 0.74, 0.12), edgecolor="tab:purple",
                        hatch="//", linewidth=0, zorder=2,
                        label=f"extrapolated: tail model's {tail.level:.0%} interval (GPD"
                              + ("; no upper limit: hatched to the top)" if open_above else ")"))
        ax.plot(bx, blo, color="tab:purple", lw=0.9, zorder=3)
    if model is not None:
        ax.plot(*model, color="tab:purple", ls="-.", marker="o", ms=3, lw=1.4, zorder=5,
                label="extrapolated from a GPD tail model (not measured)"
                      + ("" if np.isfinite(np.asarray(tail.kl, float)).all() else "; none where it has no tilt"))

    if bon_xy is not None:
        bk, bg, bse, bn = bon_xy
        ax.errorbar(bk, bg, yerr=z * bse, fmt="o", color="tab:orange", ms=6, capsize=2, zorder=6,
                    label="best-of-n", markeredgecolor="black", markeredgewidth=0.6)
        for x, y, n in zip(bk, bg, bn):
            if np.isfinite(x) and np.isfinite(y):
                ax.annotate(f"n={int(n)}", (x, y), xytext=(4, -11), textcoords="offset points", fontsize=8,
                            color="tab:orange", zorder=7)

    if run_xy is not None:
        names, rk, rg = run_xy["names"], run_xy["kl"], run_xy["gain"]
        xerr, yerr = z * run_xy["kl_se"], z * run_xy["gain_se"]
        if len(names) > MAX_LABELLED_RUNS:
            ax.errorbar(rk, rg, xerr=xerr, yerr=yerr, fmt="-s", color="tab:red", ms=4, lw=1, capsize=0,
                        alpha=0.9, zorder=5, label=f"runs ({len(names)} points, {names[0]} ... {names[-1]})")
            for i in (0, len(names) - 1):
                ax.annotate(names[i], (rk[i], rg[i]), xytext=(4, 4), textcoords="offset points", fontsize=8,
                            color="tab:red", zorder=7)
        else:
            for i, name in enumerate(names):
                face = "none" if run_xy["lower"][i] else None
                ax.errorbar(rk[i], rg[i], xerr=xerr[i], yerr=yerr[i], fmt=_MARKERS[i % len(_MARKERS)], ms=7,
                            color=_RUN_COLOURS[i % len(_RUN_COLOURS)], mfc=face, capsize=2, zorder=6, label=name,
                            markeredgecolor="black", markeredgewidth=0.6)

    if xscale == "symlog":
        from matplotlib.ticker import FixedLocator, FormatStrFormatter

        if decades:  # linear only up to the smallest KL's decade, logarithmic above: a tick a decade
            linthresh = 10.0 ** np.floor(np.log10(float(kl_pos.min())))
            ticks = [0.0] + [linthresh * 10.0**k for k in range(int(np.log10(x_max / linthresh)) + 1)]
        else:
            linthresh = max(ceiling, 1e-3)
            step = 10.0 ** np.floor(np.log10(linthresh / 2))
            ticks = list(np.arange(0, linthresh + 1e-12, step * (1 if linthresh / step <= 5 else 2)))
        ax.set_xscale("symlog", linthresh=linthresh)
        decade = 10.0 ** np.floor(np.log10(linthresh))
        while decade <= x_max and not decades:
            ticks += [m * decade for m in (1, 2, 5) if linthresh < m * decade <= x_max]
            decade *= 10
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        if decades:  # unlabelled ticks at 2..9 times each decade
            minor = [m * linthresh * 10.0**k for k in range(len(ticks) - 1) for m in range(2, 10)]
            ax.xaxis.set_minor_locator(FixedLocator([t for t in minor if t <= x_max]))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_xlim(0, x_max)
    ax.set_ylim(y_min, y_max)
    ax.set_xlabel("KL(π ‖ π₀)  [nats per sequence]")
    name, sym = (reward_label, "r") if is_frontier else (score_label, "s")
    ax.set_ylabel(f"{name} gain  E_π[{sym}] − E_π₀[{sym}]  [{name} units]")
    if title:
        ax.set_title(title)
    ax.grid(True, color="0.9", lw=0.6, zorder=0)
    if band_xy is not None or model is not None:  # many entries: below the axes, off the curves
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=7.5, framealpha=0.9)
    else:
        ax.legend(loc="best", fontsize=7.5, framealpha=0.9)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def overoptimization_figure(result, path=None, *, ax=None, title: str | None = None,
                            gold_label: str = "gold", proxy_label: str = "proxy"):
    """The over-optimisation curve: gold and proxy gain against the proxy-aligned policy's KL.

    Gold gain of the proxy-aligned policy with a ±1.96 SE band, the gold-aligned frontier (dashed,
    against its own KL; dotted: its cap where the samples cannot show gold's KL, with
    ``same_kl=True``), the proxy's promised gain on a second axis and the peak marked. Trust is
    drawn as in :func:`frontier_figure`: the curve is solid through trusted points and dashed
    through points the trust rule flags (``curve.reasons``, named in the legend), which are drawn
    hollow; points whose standard error is not known (NaN: no band) are crossed and dashed too; a
    flagged peak is a hollow star with its reasons in its label. Built on matplotlib's Agg canvas
    (no ``pyplot``; the global backend is untouched), like the other figures here.

    Args:
      result: :class:`jaxlimits.proxy.Overoptimization`.
      path: optional file to save the figure to (PNG, PDF, SVG).
      ax: optional matplotlib ``Axes`` to draw on.
      title: optional title.
      gold_label, proxy_label: what the gold and proxy rewards are called (axes and their units).

    Returns:
      The matplotlib ``Figure``.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - the test extra installs matplotlib
        raise ImportError("overoptimization_figure needs matplotlib: pip install 'jaxlimits[plot]'") from None

    from .status import Status

    c, pk = result.curve, result.peak
    kl = np.asarray(c.kl_proxy_aligned, dtype=np.float64)
    g = np.asarray(c.gold_gain_proxy_aligned, dtype=np.float64)
    se = np.asarray(c.gold_gain_proxy_aligned_se, dtype=np.float64)
    sat = np.asarray(c.saturated, dtype=bool)
    if ax is None:  # on the Agg canvas directly: no pyplot, the global backend untouched
        fig = Figure(figsize=(6.4, 4.2))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.fill_between(kl, g - 1.96 * se, g + 1.96 * se, color="C0", alpha=0.2, lw=0)
    # one encoding for trust (as frontier_figure): solid through trusted points, dashed through the
    # others (flagged by the trust rule: hollow; without a standard error, so without a band: crossed)
    no_se = ~np.isfinite(se)
    bad = sat | no_se
    near = bad | np.concatenate([bad[1:], [False]]) | np.concatenate([[False], bad[:-1]])
    if (~bad).any():
        ax.plot(kl, np.where(bad, np.nan, g), "-o", color="C0", ms=3, label="gold gain, aligned to proxy")
    if bad.any():
        codes = np.asarray(c.reasons, int)[sat]
        why = [n for n in estimators.reason_names(np.bitwise_or.reduce(codes, initial=0)).split("+") if n]
        why += ["no SE"] if no_se.any() else []
        ax.plot(kl, np.where(near, g, np.nan), "--o", color="C0", ms=3, mfc="none",
                markevery=[int(i) for i in np.flatnonzero(sat)],
                label=f"gold gain, aligned to proxy: not trustworthy ({', '.join(why)})")
    if no_se.any():
        ax.plot(kl[no_se], g[no_se], "x", color="C0", ms=5, label="no SE: precision unknown (no band)")
    ax.plot(np.asarray(c.kl_gold_aligned), np.asarray(c.gold_gain_gold_aligned), "--", color="C2",
            label="gold gain, aligned to gold (the gold frontier)")
    if result.gold_frontier is not None:
        beyond = np.asarray(result.frontier_status) == int(Status.KL_AT_OR_ABOVE_CEILING)
        if beyond.any():
            ax.plot(kl[beyond], np.asarray(result.gold_frontier)[beyond], ":", color="C2",
                    label="gold frontier cap (beyond what the samples show)")
    status = int(pk.status)
    if status == Status.OK:  # the peak was found
        ax.axvline(float(pk.kl), color="C3", lw=0.8, ls=":")
        why = estimators.reason_names(int(np.asarray(pk.reasons)))
        ax.plot([float(pk.kl)], [float(pk.gold_gain)], "*", color="C3", ms=12, mfc="none" if why else "C3",
                label=f"peak: KL {float(pk.kl):.3g}, beta {float(pk.beta):.3g}"
                + (f", not trustworthy ({why.replace('+', ', ')})" if why else ""))
    ax.set_xlabel("KL(pi || pi0) of the policy aligned to the proxy  [nats per sequence]")
    ax.set_ylabel(f"{gold_label} gain  [{gold_label} units]")
    ax2 = ax.twinx()
    ax2.plot(kl, np.asarray(c.proxy_gain), color="C1", alpha=0.8, label="proxy gain (right axis)")
    ax2.set_ylabel(f"{proxy_label} gain  [{proxy_label} units]", color="C1")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="best")
    if status != Status.OK:
        ax.set_title((title + "\n" if title else "") + Status(status).message, fontsize=9)
    elif title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
