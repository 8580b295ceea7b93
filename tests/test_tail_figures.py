"""Figures with a tail model (issue 16): the model drawn apart from the measured frontier, and the CLI's wiring.

The tail model here is a hand-built :class:`jaxlimits.TailCurve` with known intervals (no fit: these
tests take seconds); the fitted model's own figure is in ``test_tail.py``.
"""

import json

import numpy as np
import pytest

import jaxlimits as jl
from jaxlimits import estimators, plot
from jaxlimits.tail import TailCurve

PNG = b"\x89PNG\r\n\x1a\n"


def model_at(betas, kl, gain, kl_lo, kl_hi, gain_lo, gain_hi, level=0.95) -> TailCurve:
    """A TailCurve holding only what the figures read (the pooled curve and its intervals)."""
    fields = dict.fromkeys(TailCurve._fields)
    arrays = dict(betas=betas, kl=kl, gain=gain, kl_lo=kl_lo, kl_hi=kl_hi, gain_lo=gain_lo, gain_hi=gain_hi)
    fields.update({k: np.asarray(v, float) for k, v in arrays.items()}, level=level)
    return TailCurve(**fields)


def test_tail_band_spans_the_boxes_and_neighbouring_pairs_that_reach_a_kl():
    inf, nan = np.inf, np.nan
    m = model_at([2.0, 1.0, 0.5], [0.2, 1.0, nan], [0.3, 0.9, nan], [0.1, 0.5, 1.0], [0.3, 2.0, inf],
                 [0.2, 0.6, 1.0], [0.4, 1.2, inf])
    # boxes (KL reach -> gain): beta 2 [0.1, 0.3] -> [0.2, 0.4]; beta 1 [0.5, 2] -> [0.6, 1.2]; beta 0.5
    # [1, inf] -> [1, inf]; the pairs of neighbours (2, 1) [0.1, 2] -> [0.2, 1.2], (1, 0.5) [0.5, inf] -> [0.6, inf]
    lo, hi = plot.tail_band(m, [0.05, 0.2, 0.7, 5.0])
    np.testing.assert_array_equal(lo, [nan, 0.2, 0.2, 0.6])
    np.testing.assert_array_equal(hi, [nan, 1.2, inf, inf])
    # a NaN limit is open: beta 2's box reaches every KL below it
    assert plot.tail_band(m._replace(kl_lo=np.array([nan, 0.5, 1.0])), [0.01])[0][0] == 0.2
    # with the measured frontier, its trusted points (beta 2) stand for themselves, the model only below them
    z = 1.959963984540054
    measured = type("Measured", (), dict(betas=np.array([2.0, 1.0, 0.5]), saturated=np.array([False, True, True]),
                                         kl=np.array([0.2, 9.0, 9.0]), kl_se=np.array([0.01, 1.0, 1.0]),
                                         gain=np.array([0.3, 9.0, 9.0]), gain_se=np.array([0.02, 1.0, 1.0]),
                                         bands=None))()  # only what tail_band reads
    lo, hi = plot.tail_band(m, [0.25, 5.0], frontier=measured)
    np.testing.assert_allclose(lo, [0.3 - z * 0.02, 0.6], rtol=1e-12)
    np.testing.assert_array_equal(hi, [1.2, inf])
    # at or past the samples' ceiling (here 4 nats) the floor is the largest measured gain (the samples' cap,
    # invert's and compare's bound there), never above the upper limit
    measured.extrapolated, measured.kl_ceiling, measured.gain = None, 4.0, np.array([0.3, 0.7, 0.8])
    lo, hi = plot.tail_band(m, [0.25, 3.0, 5.0], frontier=measured)
    np.testing.assert_allclose(lo, [0.3 - z * 0.02, 0.6, 0.8], rtol=1e-12)
    measured.gain, measured.kl_ceiling = np.array([0.3, 0.7, 50.0]), 0.2  # a cap above the upper limit: held there
    lo, hi = plot.tail_band(m, [0.25], frontier=measured)
    assert lo[0] == hi[0] == 1.2


@pytest.fixture(scope="module")
def measured():
    """A measured frontier (16 x 64 standard-normal rewards on the CLI's 32 betas: one compiled sweep for the
    file) with flagged points, some inside the samples' ceiling and some at it (where extrapolation starts),
    and a model past its trusted part: a point curve that ends (no tilt) and open intervals."""
    from jaxlimits.tail import beyond_samples

    r = np.random.default_rng(11).standard_normal((16, 64))
    # (equal importance weights: the tail is not modelled, so the rule flags points inside the ceiling
    # (few, tail) as it does for weighted samples; with plain samples every point inside it is trusted)
    f = jl.frontier(jl.Samples(r, log_weights=np.zeros_like(r)), num_betas=32, per_prompt=False)
    sat = np.asarray(f.saturated)
    ext = beyond_samples(f.reasons, f.gain, f.kl)
    assert (sat & ~ext).any() and ext.any() and not sat.all()  # flagged inside the ceiling, and at it
    kl, gain, betas = (np.asarray(v, float) for v in (f.kl, f.gain, f.betas))
    past = betas < betas[~sat].min()
    no_tilt = ext & (np.cumsum(ext) > 3)  # the model's point has no tilt after its first 3 extrapolated betas
    m_kl = np.where(no_tilt, np.nan, 1.1 * kl)
    m_gain = np.where(no_tilt, np.nan, 1.2 * gain)
    model = model_at(betas, m_kl, m_gain, 0.8 * kl, np.where(past, np.inf, 1.3 * kl), 0.9 * gain,
                     np.where(no_tilt, np.inf, 1.5 * gain))
    return f, model, past, no_tilt


def test_figure_draws_the_measured_frontier_and_the_model_apart(measured, tmp_path):
    f, model, past, no_tilt = measured
    path = tmp_path / "tail.png"
    fig = plot.frontier_figure(f, tail=model, path=path)
    assert path.read_bytes()[:8] == PNG
    ax = fig.axes[0]
    handles, labels = ax.get_legend_handles_labels()
    by_label = dict(zip(labels, handles))
    band = next(lab for lab in labels if lab.startswith("extrapolated: tail model's 95% interval"))
    assert "no upper limit: hatched to the top" in band and by_label[band].get_hatch() == "//"
    point = next(lab for lab in labels if lab.startswith("extrapolated from a GPD tail model (not measured)"))
    assert "none where it has no tilt" in point
    # the model's point curve: its finite points where extrapolation starts (the points flagged 'ceiling';
    # not those flagged inside the samples' ceiling, whose measurement stands), by KL, dash-dotted
    ext = (np.asarray(f.reasons) & estimators.CEILING) != 0
    want = np.sort(np.asarray(model.kl)[ext & ~no_tilt])
    np.testing.assert_allclose(by_label[point].get_xdata(), want)
    assert by_label[point].get_linestyle() == "-."
    # the measured flagged points stay on the dashed measured curve, in the one flagged encoding
    dashed = next(h for lab, h in by_label.items() if lab.startswith("frontier, not trustworthy"))
    flagged_kl = np.asarray(f.kl)[np.asarray(f.saturated)]
    assert np.isin(flagged_kl, dashed.get_xdata()).all() and dashed.get_linestyle() == "--"
    # the band starts where extrapolation starts: past the last measured point the model does not replace
    band_x = by_label[band].get_paths()[0].vertices[:, 0]
    assert band_x.min() > np.asarray(f.kl)[~ext].max() > np.asarray(f.kl)[~np.asarray(f.saturated)].max()
    # axes that show all of it: every finite model value and measured point, KL on a symlog axis (decades)
    x_lo, x_hi = ax.get_xlim()
    y_lo, y_hi = ax.get_ylim()
    assert ax.get_xscale() == "symlog" and x_lo == 0
    assert x_hi >= np.nanmax(np.asarray(model.kl_lo)[past]) and x_hi >= float(f.kl_ceiling)
    assert y_hi > max(np.nanmax(model.gain), np.max(np.asarray(f.gain)), np.max(np.asarray(model.gain_lo)))
    # the legend sits below the axes (it would cover the curves)
    assert ax.get_legend().get_bbox_to_anchor().y0 < ax.get_window_extent().y0


def test_figure_without_a_model_is_unchanged_and_bad_tail_is_named(measured):
    f, *_ = measured
    labels = plot.frontier_figure(f).axes[0].get_legend_handles_labels()[1]
    assert not any("tail model" in lab for lab in labels)
    with pytest.raises(TypeError, match="tail must be a jaxlimits.TailCurve"):
        plot.frontier_figure(f, tail=np.zeros(3))


def _write(tmp_path, r):
    path = tmp_path / "s.jsonl"
    path.write_text("".join(f'{{"prompt_id": {p}, "reward": {float(v)!r}}}\n' for p in range(len(r)) for v in r[p]))
    return path


def _fake_tail_curve(samples, betas, **_):
    """Stands in for the fitted model (seconds, not a compile): open above past KL 0.3."""
    f = jl.frontier(samples, np.asarray(betas), per_prompt=False)
    kl, gain = np.asarray(f.kl, float), np.asarray(f.gain, float)
    past = kl > 0.3
    model = model_at(betas, 1.1 * kl, 1.2 * gain, 0.8 * kl, np.where(past, np.inf, 1.3 * kl), 0.9 * gain,
                     np.where(past, np.inf, 1.5 * gain))
    return model._replace(gain_se=model.gain, kl_se=model.kl, extrapolated=past,
                          reasons=np.zeros(len(kl), np.int32), fitted=np.ones(samples.num_prompts, bool))


@pytest.fixture
def drawn_figures(monkeypatch):
    """The figures the CLI draws: frontier_figure's frontier, tail and legend labels, per call."""
    calls = []
    real = plot.frontier_figure

    def spy(frontier, **kw):
        fig = real(frontier, **kw)
        calls.append((frontier, kw.get("tail"), fig.axes[0].get_legend_handles_labels()[1]))
        return fig

    monkeypatch.setattr(plot, "frontier_figure", spy)
    return calls


def test_cli_frontier_tail_plot_draws_measured_and_model(tmp_path, monkeypatch, drawn_figures, capsys):
    from jaxlimits import tail
    from jaxlimits.cli import main

    monkeypatch.setattr(tail, "tail_curve", _fake_tail_curve)
    path = _write(tmp_path, np.random.default_rng(11).standard_normal((16, 64)))
    png = tmp_path / "f.png"
    assert main(["frontier", str(path), "--tail", "gpd", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == PNG and "extrapolated" in capsys.readouterr().out
    ((frontier, model, labels),) = drawn_figures
    # the measured frontier (its flagged points drawn dashed), and the model beside it
    assert frontier.extrapolated is None and isinstance(model, TailCurve)
    assert any(lab.startswith("frontier, not trustworthy") for lab in labels)
    assert any(lab.startswith("extrapolated: tail model's 95% interval") for lab in labels)


def test_cli_compare_tail_plot_draws_the_model_and_says_shared_notes_once(tmp_path, monkeypatch, drawn_figures,
                                                                          capsys):
    import importlib

    from jaxlimits.cli import main

    library = importlib.import_module("jaxlimits.compare")  # the module (jl.compare is its function)
    real_compare = library.compare
    # the table's model is tested in test_tail_inversion.py; here only the figure: no fit
    monkeypatch.setattr(library, "compare", lambda *a, tail=None, tail_replicates=None, **kw: real_compare(*a, **kw))
    asked = []
    monkeypatch.setattr(jl, "tail_curve", lambda s, betas, **kw: asked.append(betas) or _fake_tail_curve(s, betas))
    path = _write(tmp_path, np.random.default_rng(11).standard_normal((16, 64)))
    runs = tmp_path / "runs.csv"
    runs.write_text("name,kl,gain\na,0.5,0.4\nb,1.0,0.6\nc,30.0,2.0\n")
    png = tmp_path / "c.png"
    out = tmp_path / "c.json"
    assert main(["compare", str(path), "--runs", str(runs), "--run-gain-col", "gain", "--tail", "gpd",
                 "--plot", str(png), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert png.read_bytes()[:8] == PNG
    ((frontier, model, labels),) = drawn_figures
    assert isinstance(model, TailCurve) and frontier.extrapolated is None
    assert any(lab.startswith("extrapolated: tail model's 95% interval") for lab in labels)
    assert {"a", "b", "c"} <= set(labels)
    # one model curve, only at the betas the figure uses it (below the trusted frontier's smallest)
    betas = np.asarray(frontier.betas)
    ((asked_betas,),) = [asked]
    np.testing.assert_array_equal(asked_betas, betas[betas < betas[~np.asarray(frontier.saturated)].min()])
    # "KL taken as sequence-level" once (the runs' loader's note), not once more per run
    assert text.count("KL taken as sequence-level") == 1
    assert "c: KL taken" not in text and "c: " in text  # the run's own note stays
    # --out keeps every run's whole note
    rows = json.loads(out.read_text())["rows"]
    assert all(r["note"].startswith("KL taken as sequence-level, as given (unit='sequence')") for r in rows)
