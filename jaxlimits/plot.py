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

from . import estimators
from .samples import Samples

#: Above this many runs they are drawn as one connected series (a training trajectory).
MAX_LABELLED_RUNS = 8

_MARKERS = ("s", "^", "D", "v", "P", "X", "<", ">")


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


def _tail_points(frontier, ext):
    """``(kl, gain, gain_lo, gain_hi)`` of the extrapolated points with a finite model KL, by KL; or None."""
    if not ext.any() or frontier.tail is None:
        return None
    t = frontier.tail
    kl = np.asarray(frontier.kl, float)[ext]
    vals = [kl, np.asarray(frontier.gain, float)[ext], np.asarray(t.gain_lo, float)[ext],
            np.asarray(t.gain_hi, float)[ext]]
    ok = np.isfinite(kl) & np.isfinite(vals[1])  # no-tilt points have no model value to draw
    if not ok.any():
        return None
    srt = np.argsort(kl[ok])
    return tuple(v[ok][srt] for v in vals)


def frontier_figure(
    frontier,
    *,
    bon=None,
    runs=None,
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
    figsize: tuple[float, float] = (7.5, 5.0),
    dpi: int = 150,
):
    """The KL-reward frontier with best-of-n and alignment runs against it (the paper's Figure 1).

    Drawn: the frontier (the optimal KL-regularised policies) from ``(0, 0)``: solid where the
    trust rule passes, dashed where it does not (the legend names the reasons: ``Frontier.reasons``);
    points extrapolated by a tail model (``frontier(tail="gpd")``) apart, dotted purple with their
    interval hatched (open intervals hatched to the top), never like the measured curve;
    its uncertainty band; the unreachable region (grey) above the upper confidence limit of the
    trusted points only; the sample ceiling ``mean_x log(N/m)`` (dotted); best-of-n points labelled
    by ``n``; and run points with error bars. KL in nats per sequence, gain in reward units.

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
        frontier's KL range, e.g. a run whose KL is many times the sample ceiling).
      xmax: right end of the KL axis: nats, ``"full"`` (the frontier to the sample ceiling), or
        None (default): the extent of the runs and best-of-n points when there are any, else
        ``"full"``.
      use_scores: with samples that carry separate scores, draw the gain measured with them
        (the default draws the frontier of the rewards, what the runs are compared with).
      num_betas: points of the frontier computed from samples.
      figsize, dpi: of a new figure.

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
    if not (xmax is None or xmax == "full" or (isinstance(xmax, (int, float)) and np.isfinite(xmax) and xmax > 0)):
        raise ValueError(f"xmax must be a positive number of nats, 'full' or None, got {xmax!r}")

    if ax is None:
        fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig = ax.figure

    kl = np.asarray(frontier.kl, float)
    gain = np.asarray(frontier.gain, float)
    sat = np.asarray(frontier.saturated, bool)
    # points from the tail model (frontier(tail="gpd")) are drawn apart, never like measured ones
    ext = np.zeros(len(kl), bool) if frontier.extrapolated is None else np.asarray(frontier.extrapolated, bool)
    tail_xy = _tail_points(frontier, ext)
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
    full = float(np.nanmax(np.concatenate([kl, [ceiling], px, tail_xy[0] if tail_xy else []]))) * 1.06
    if xmax == "full" or (xmax is None and not (px > 0).any()):
        x_max = full
    elif xmax is None:  # default to the data: the points, with a margin
        x_max = min(float(px.max()) * 1.15, full)
    else:
        x_max = float(xmax)
    # the frontier up to the right end (and its next point, which the line runs to)
    shown = np.arange(len(kl)) <= np.searchsorted(kl, x_max)
    tail_y = [] if not tail_xy else [v[tail_xy[0] <= x_max] for v in tail_xy[1:]]
    y_all = np.concatenate([hi[shown], [0.0]] + [np.ravel(y) for y in pts_y] + tail_y)
    y_all = y_all[np.isfinite(y_all)]
    y_lo = min(0.0, float(np.nanmin(np.concatenate([lo[shown], y_all])))) if len(lo) else 0.0
    y_top = float(np.nanmax(y_all))
    y_max = y_top + 0.12 * max(y_top - y_lo, 1e-12)
    y_min = y_lo - 0.07 * max(y_top - y_lo, 1e-12)
    if xscale == "auto":
        xscale = "symlog" if x_max > 4 * max(float(kl.max(initial=0.0)), ceiling) else "linear"

    # The band, the curve (trusted / saturated), the unreachable region.
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
    ax.axvline(ceiling, color="0.3", ls=":", lw=1.2, label=f"sample ceiling mean log(N/m) = {ceiling:.3g} nats",
               zorder=3)
    if tail_xy:
        tk, tg, tlo, thi = tail_xy
        level_t = frontier.tail.level
        ax.fill_between(tk, tlo, np.minimum(thi, y_max), facecolor="none", edgecolor="tab:purple", hatch="//",
                        linewidth=0, zorder=2, label=f"extrapolated: tail model's {level_t:.0%} interval (to the top: "
                                                     "unbounded)" if np.any(~np.isfinite(thi)) else
                        f"extrapolated: tail model's {level_t:.0%} interval")
        ax.plot(tk, tg, color="tab:purple", ls=":", marker="o", ms=3, lw=1.4, zorder=4,
                label="extrapolated from a GPD tail model (not measured)")

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
                            color=f"C{(i + 3) % 10}", mfc=face, capsize=2, zorder=6, label=name,
                            markeredgecolor="black", markeredgewidth=0.6)

    if xscale == "symlog":
        from matplotlib.ticker import FixedLocator, FormatStrFormatter

        linthresh = max(ceiling, 1e-3)
        ax.set_xscale("symlog", linthresh=linthresh)
        step = 10.0 ** np.floor(np.log10(linthresh / 2))
        ticks = list(np.arange(0, linthresh + 1e-12, step * (1 if linthresh / step <= 5 else 2)))
        decade = 10.0 ** np.floor(np.log10(linthresh))
        while decade <= x_max:
            ticks += [m * decade for m in (1, 2, 5) if linthresh < m * decade <= x_max]
            decade *= 10
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_xlim(0, x_max)
    ax.set_ylim(y_min, y_max)
    ax.set_xlabel("KL(π ‖ π₀)  [nats per sequence]")
    name, sym = (reward_label, "r") if is_frontier else (score_label, "s")
    ax.set_ylabel(f"{name} gain  E_π[{sym}] − E_π₀[{sym}]  [{name} units]")
    if title:
        ax.set_title(title)
    ax.grid(True, color="0.9", lw=0.6, zorder=0)
    ax.legend(loc="best", fontsize=7.5, framealpha=0.9)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def overoptimization_figure(result, path=None, *, ax=None, title: str | None = None,
                            gold_label: str = "gold", proxy_label: str = "proxy"):
    """The over-optimisation curve: gold and proxy gain against the proxy-aligned policy's KL.

    Gold gain of the proxy-aligned policy with a ±1.96 SE band, the gold-aligned frontier (dashed,
    against its own KL; dotted: its cap where the samples cannot show gold's KL, with
    ``same_kl=True``), the proxy's promised gain on a second axis, the peak marked, and saturated
    points (too few effective samples) drawn hollow. Built on matplotlib's Agg canvas (no
    ``pyplot``; the global backend is untouched), like the other figures here.

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
    ax.plot(kl, g, color="C0", label="gold gain, aligned to proxy")
    ax.plot(kl[~sat], g[~sat], "o", color="C0", ms=3)
    if sat.any():
        ax.plot(kl[sat], g[sat], "o", mfc="none", color="C0", ms=3, label="saturated (few effective samples)")
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
        ax.plot([float(pk.kl)], [float(pk.gold_gain)], "*", color="C3", ms=12,
                label=f"peak: KL {float(pk.kl):.3g}, beta {float(pk.beta):.3g}")
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
