"""The paper's Figure 1: renders headless to PNG, and draws the data it was given."""

import numpy as np
import pytest

import jaxlimits as jl
from jaxlimits import bon, plot

PNG = b"\x89PNG\r\n\x1a\n"


def synthetic_rows(prompts=16, samples=64, seed=11):
    """The synthetic data shared with the CLI tests (one compilation of each solver for all)."""
    return list(np.random.default_rng(seed).standard_normal((prompts, samples)))


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    s = jl.Samples.from_ragged(synthetic_rows())
    f = jl.frontier(s, num_betas=64, per_prompt=False)
    b = bon.best_of_n(s, [1, 2, 4, 8], frontier=False)
    runs = [jl.Run("PPO", 0.6, 0.5, kl_se=0.05, gain_se=0.04), jl.Run("GRPO", 0.002, 0.3, unit="token",
                                                                        completion_length=400)]
    path = tmp_path_factory.mktemp("fig") / "fig1.png"
    fig = plot.frontier_figure(f, bon=b, runs=runs, path=path, title="synthetic", reward_label="gold")
    return f, b, runs, path, fig


def test_renders_a_png_without_a_display(drawn):
    *_, path, fig = drawn
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 20_000
    assert fig.canvas.get_renderer() is not None  # the Agg canvas, no pyplot, no display


def test_axes_hold_the_frontier_bon_and_runs(drawn):
    f, b, runs, _, fig = drawn
    ax = fig.axes[0]
    assert "nats" in ax.get_xlabel() and "gold gain" in ax.get_ylabel() and ax.get_title() == "synthetic"
    kl, gain = np.asarray(f.kl, float), np.asarray(f.gain, float)
    lines = [ln for ln in ax.get_lines() if str(ln.get_label()).startswith("frontier")]
    xs = np.concatenate([ln.get_xdata() for ln in lines])
    ys = np.concatenate([ln.get_ydata() for ln in lines])
    drawn_part = np.isfinite(ys)  # each style is drawn where it applies (NaN elsewhere)
    xs, ys = xs[drawn_part], ys[drawn_part]
    # solid + dashed parts cover the curve, from the base policy at (0, 0) (issue 13, item 6)
    np.testing.assert_allclose(np.unique(xs), np.unique(np.concatenate([[0.0], kl])))
    assert ys[np.argmin(xs)] == 0.0
    np.testing.assert_allclose(np.interp(kl, xs[np.argsort(xs)], ys[np.argsort(xs)]), gain, atol=1e-12)
    sat = np.asarray(f.saturated)
    styles = {ln.get_linestyle() for ln in lines}
    assert ("--" in styles) == bool(sat.any()) and ("-" in styles) == bool((~sat).any())
    # best-of-n points at (kl, reward gain), labelled by n
    marker_lines = {ln.get_label(): ln for ln in ax.get_lines()}
    pts = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert len(pts) == 1
    np.testing.assert_allclose(pts[0].get_xdata(), np.asarray(b.kl))
    np.testing.assert_allclose(pts[0].get_ydata(), np.asarray(b.reward_gain))
    assert {t.get_text() for t in ax.texts} >= {"n=1", "n=2", "n=4", "n=8"}
    # runs: the per-token one converted to nats per sequence (0.002 x 400 = 0.8)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"PPO", "GRPO", "best-of-n"} <= set(legend)
    # shaded above the upper confidence limit of the trusted points only (issue 12)
    assert "unreachable (above the trusted frontier's upper confidence limit)" in legend
    run_pts = [ln for ln in ax.get_lines() if ln.get_marker() in ("s", "^")]
    np.testing.assert_allclose(sorted(float(ln.get_xdata()[0]) for ln in run_pts), [0.6, 0.8])
    # one encoding for trust (issue 12): no separate saturation region, the sample ceiling stays (in the legend
    # where its line is on the axis: not here, the axis ends at the points, below it; 'full' below)
    assert not any("saturation region" in t for t in legend) and not any("sample ceiling" in t for t in legend)
    assert marker_lines  # (labels present)
    # the KL axis defaults to the points' range (runs to 0.8 + 1.96 x 0.05 nats, best-of-8 ~ 1.2 nats) ...
    lo, hi = ax.get_xlim()
    right = max(0.6 + 1.96 * 0.05, 0.8, float(np.max(np.asarray(b.kl))))
    assert lo == 0 and right < hi <= 1.2 * right < float(np.max(kl))
    # ... and 'full' shows the frontier to the sample ceiling
    full_ax = plot.frontier_figure(f, bon=b, runs=runs, xmax="full").axes[0]
    full = full_ax.get_xlim()[1]
    assert full >= max(0.8, float(np.max(kl)), float(f.kl_ceiling))
    assert any("sample ceiling" in t.get_text() for t in full_ax.get_legend().get_texts())
    assert plot.frontier_figure(f, runs=runs, xmax=0.3).axes[0].get_xlim() == (0.0, 0.3)


def test_many_runs_are_one_series_and_far_runs_switch_to_symlog(drawn):
    f, *_ = drawn
    runs = [jl.Run(f"step {10 * i}", 2.0 * i, 0.1 * i) for i in range(1, 21)]  # to 40 nats: 10x the ceiling
    fig = plot.frontier_figure(f, runs=runs)
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("runs (20 points, step 10 ... step 200)") for t in legend)
    assert plot.frontier_figure(f, runs=runs, xscale="linear").axes[0].get_xscale() == "linear"


def test_draws_into_given_axes_and_rejects_bad_input(drawn):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    f, *_ = drawn
    fig = Figure()
    FigureCanvasAgg(fig)
    axs = fig.subplots(1, 2)
    assert plot.frontier_figure(f, ax=axs[1]) is fig
    assert axs[1].has_data() and not axs[0].has_data()
    with pytest.raises(ValueError, match="xscale"):
        plot.frontier_figure(f, xscale="log")
    with pytest.raises(TypeError, match="Frontier or Samples"):
        plot.frontier_figure(np.zeros(3))
