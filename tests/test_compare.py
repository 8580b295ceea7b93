"""Runs against the frontier: synthetic runs exactly on, below and above a known frontier; units; loaders; real data."""

import json
import math
import re

import numpy as np
import pytest
from conftest import data_file
from scipy import optimize

import jaxlimits as jl
from jaxlimits import bon, io, plot
from jaxlimits.cli import main
from jaxlimits.compare import Run, load_runs, run_from_samples, sequence_kl
from jaxlimits.estimators import reason_names
from jaxlimits.io import DataError

# A categorical base law: its frontier is computed here independently (SciPy root finding on the
# exact tilted sums), so the runs can be put exactly on, below and above it.
VALUES = np.array([0.0, 0.4, 1.0, 1.5, 3.0])
PROBS = np.array([0.35, 0.25, 0.2, 0.15, 0.05])


def _tilt(beta):
    """Exact gain and KL of the tilted law at beta (log-sum-exp, NumPy)."""
    a = np.log(PROBS) + VALUES / beta
    log_p = a - a.max() - np.log(np.sum(np.exp(a - a.max())))
    p = np.exp(log_p)
    return float(p @ VALUES - PROBS @ VALUES), float(np.sum(p * (log_p - np.log(PROBS))))


def _gain_at(kl):
    t = optimize.brentq(lambda t: _tilt(math.exp(t))[1] - kl, -4, 12, xtol=1e-14, rtol=1e-15)
    return _tilt(math.exp(t))[0]


def _kl_for(gain):
    t = optimize.brentq(lambda t: _tilt(math.exp(t))[0] - gain, -4, 12, xtol=1e-14, rtol=1e-15)
    return _tilt(math.exp(t))[1]


@pytest.fixture(scope="module")
def law():
    return jl.Samples.from_law([VALUES], [PROBS])


@pytest.fixture(scope="module")
def on_below_above(law):
    k = 0.3
    g = _gain_at(k)
    runs = [
        Run("on", k, g),
        Run("below", k, 0.5 * g),
        Run("above", k, 1.2 * g),
        Run("on, per token", k / 250, g, unit="token", completion_length=250),
        Run("above within SE", k, 1.02 * g, gain_se=0.05),
        Run("beyond K_max", 5.0, 1.0),
        Run("negative gain", 0.1, -0.2),
    ]
    return k, g, jl.compare(law, runs)


def test_runs_on_below_and_above_a_known_frontier(on_below_above):
    k, g, res = on_below_above
    assert res.names[:3] == ("on", "below", "above")
    f = np.asarray(res.frontier_gain)
    np.testing.assert_allclose(f[[0, 1, 2, 3, 4]], g, rtol=1e-9)  # the solver's tolerance, not the law's
    eff = np.asarray(res.reward_efficiency)
    np.testing.assert_allclose(eff[:4], [1.0, 0.5, 1.2, 1.0], rtol=1e-9)
    left = np.asarray(res.left_on_table)
    np.testing.assert_allclose(left[:4], [0.0, 0.5 * g, -0.2 * g, 0.0], atol=1e-9)
    np.testing.assert_array_equal(np.asarray(res.above_frontier), [False, False, True, False, False, False, False])
    # KL*(gain): the least KL for the run's gain (the Cramér rate function), and its share of the spent KL
    min_kl = np.asarray(res.min_kl)
    np.testing.assert_allclose(min_kl[:3], [k, _kl_for(0.5 * g), _kl_for(1.2 * g)], rtol=1e-8)
    np.testing.assert_allclose(np.asarray(res.kl_efficiency)[:2], [1.0, _kl_for(0.5 * g) / k], rtol=1e-8)
    assert float(res.kl_efficiency[2]) > 1  # above the frontier: it spent less KL than the gain needs
    # the flag counts the run's own uncertainty: 2% above with a 0.05 SE is not flagged
    assert not bool(res.above_frontier[4]) and 0 < float(res.excess_z[4]) < 1.96


def test_per_token_kl_is_converted_only_when_said(on_below_above):
    k, g, res = on_below_above
    assert abs(float(res.kl[3]) - k) < 1e-15
    assert "per token" in res.notes[3] and "250 tokens" in res.notes[3]
    assert "as given" in res.notes[0]
    kl, se, note = sequence_kl(Run("x", 0.002, 1.0, kl_se=0.0001, unit="token", completion_length=300))
    assert (kl, se) == (0.002 * 300, 0.0001 * 300) and "0.6 nats" in note


def test_beyond_the_ceiling_and_negative_gains(on_below_above):
    _, _, res = on_below_above
    # an exact law: beyond K_max = -log P(max) the frontier is flat at max r - E r, exactly
    cap = VALUES.max() - PROBS @ VALUES
    assert abs(float(res.frontier_gain[5]) - cap) < 1e-12 and not bool(res.lower_bound[5])
    assert "flat" in res.notes[5]
    # a negative gain needs no KL
    assert float(res.min_kl[6]) == 0.0 and float(res.kl_efficiency[6]) == 0.0
    rows = res.rows()
    assert rows[2]["above_frontier"] is True and rows[2]["name"] == "above" and "ABOVE" in rows[2]["note"]
    json.dumps(rows)  # plain Python values


def test_standard_errors_not_given_are_missing_not_zero(on_below_above):
    """A run without SEs: the flag counts only the frontier's uncertainty (as for 0), and the SE is
    reported as missing (None in rows(): null in JSON, an empty CSV cell), not as an exact 0.0."""
    _, _, res = on_below_above
    np.testing.assert_array_equal(np.asarray(res.kl_se_given), False)
    np.testing.assert_array_equal(np.asarray(res.gain_se_given), [False] * 4 + [True, False, False])
    np.testing.assert_array_equal(np.asarray(res.gain_se)[[0, 1, 2]], 0.0)  # what the flag uses
    rows = res.rows()
    assert [(r["kl_se"], r["gain_se"]) for r in rows[3:5]] == [(None, None), (None, 0.05)]
    assert "kl_se_given" not in rows[0]
    assert rows[0]["measured_frontier_saturated"] is False and rows[0]["measured_min_kl_saturated"] is False
    assert "of the frontier's uncertainty only: the run gave no KL or gain SE" in rows[2]["note"]
    assert any(n.startswith("runs without standard errors (on, below, above, on, per token ...)")
               for n in res.notices)
    assert Run("x", 0.1, 0.2).kl_se is None and run_from_samples(
        "x", jl.Samples([[1.0, 2.0]]), jl.Samples([[0.0, 1.0]]), kl=0.3).kl_se is None


def test_bad_runs_raise_clear_errors(law):
    with pytest.raises(ValueError, match="completion_length"):
        jl.compare(law, [Run("r", 0.01, 0.1, unit="token")])
    with pytest.raises(ValueError, match="unit must be one of"):
        jl.compare(law, [Run("r", 0.01, 0.1, unit="nats")])
    with pytest.raises(ValueError, match="kl = -0.1 is negative"):
        jl.compare(law, [Run("r", -0.1, 0.1)])
    with pytest.raises(ValueError, match="not finite"):
        jl.compare(law, [Run("r", float("nan"), 0.1)])
    with pytest.raises(ValueError, match="unit is 'sequence'"):
        jl.compare(law, [Run("r", 0.1, 0.1, completion_length=200)])
    with pytest.raises(ValueError, match="no runs"):
        jl.compare(law, [])
    with pytest.raises(ValueError, match="level"):
        jl.compare(law, [Run("r", 0.1, 0.1)], level=1.5)


def test_run_from_samples_pairs_prompts():
    rng = np.random.default_rng(0)
    base_r = rng.normal(size=(6, 10))
    pol_r = rng.normal(0.5, 1.2, size=(6, 7))
    run = run_from_samples("ppo", jl.Samples(pol_r), jl.Samples(base_r), kl=1.5, kl_se=0.1)
    d = pol_r.mean(1) - base_r.mean(1)
    var = pol_r.var(1, ddof=1) / 7 + base_r.var(1, ddof=1) / 10
    assert abs(run.gain - d.mean()) < 1e-14
    assert abs(run.gain_se - math.sqrt(var.sum()) / 6) < 1e-14
    # counts are draws: the same as the expanded sample
    c = run_from_samples("c", jl.Samples([[1.0, 2.0]], counts=[[2, 1]]), jl.Samples([[0.0, 1.0]]), kl=0.1)
    e = run_from_samples("e", jl.Samples([[1.0, 1.0, 2.0]]), jl.Samples([[0.0, 1.0]]), kl=0.1)
    assert abs(c.gain - e.gain) < 1e-15 and abs(c.gain_se - e.gain_se) < 1e-15
    with pytest.raises(ValueError, match="same prompts"):
        run_from_samples("x", jl.Samples(pol_r[:3]), jl.Samples(base_r), kl=1.0)


def _write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


def test_load_runs_with_named_columns(tmp_path):
    f = _write_csv(tmp_path / "runs.csv", ["step", "kl_tok", "len", "reward", "g"],
                   [[100, 0.01, 200, 1.5, 0.4], [200, 0.02, 180, 2.0, 0.9], [300, 0.03, 150, 2.2, 1.1]])
    runs, notes = load_runs(f, kl="kl_tok", gain="g", name="step")
    assert [r.name for r in runs] == ["step 100", "step 200", "step 300"]
    assert [r.kl for r in runs] == [0.01, 0.02, 0.03] and all(r.unit == "sequence" for r in runs)
    assert any("as given" in n for n in notes)  # nothing converted unless the unit is stated
    runs, notes = load_runs(f, kl="kl_tok", reward="reward", baseline=1.0, unit="token", length="len",
                            where={"step": [200, 300]})
    assert [sequence_kl(r)[0] for r in runs] == pytest.approx([0.02 * 180, 0.03 * 150])
    assert [r.gain for r in runs] == pytest.approx([1.0, 1.2])
    assert any("- 1" in n for n in notes) and any("per token" in n for n in notes)
    runs, _ = load_runs(f, kl="kl_tok", gain="g", unit="token", completion_length=100.0)
    assert sequence_kl(runs[0])[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="exactly one of gain"):
        load_runs(f, kl="kl_tok", gain="g", reward="reward")
    with pytest.raises(ValueError, match="baseline"):
        load_runs(f, kl="kl_tok", reward="reward")
    with pytest.raises(ValueError, match="completion length"):
        load_runs(f, kl="kl_tok", gain="g", unit="token")
    with pytest.raises(ValueError, match="only applies"):
        load_runs(f, kl="kl_tok", gain="g", length="len")
    with pytest.raises(DataError, match="no column 'kl'"):
        load_runs(f, gain="g")
    bad = _write_csv(tmp_path / "bad.csv", ["kl", "g"], [[0.1, 0.2], [-0.5, 0.3]])
    with pytest.raises(DataError, match="bad.csv:line 3.*negative"):
        load_runs(bad, gain="g")


def test_load_runs_takes_names_from_a_name_column(tmp_path):
    """A table with a ``name`` (or ``run``) column names its runs without being told; said in the notes."""
    f = _write_csv(tmp_path / "runs.csv", ["name", "kl", "gain"], [["ppo", 0.5, 0.4], ["grpo", 1.0, 0.6]])
    runs, notes = load_runs(f, gain="gain")
    assert [r.name for r in runs] == ["ppo", "grpo"] and "names from column 'name'" in notes[0]
    g = _write_csv(tmp_path / "plain.csv", ["kl", "gain"], [[0.5, 0.4]])
    runs, notes = load_runs(g, gain="gain")
    assert runs[0].name == "plain:line 2" and "names from" not in notes[0]
    assert runs[0].kl_se is None and runs[0].gain_se is None  # not given: not 0.0 (an exact value)


def test_flagged_frontier_says_why():
    """A run where the pooled frontier is flagged carries the trust rule's reasons, spelled out in its row."""
    r = np.random.default_rng(0).standard_normal((20, 64))
    res = jl.compare(jl.Samples(r), [Run("small", 0.01, 0.1), Run("large", 2.0, 1.0)])
    reasons = np.asarray(res.frontier_reasons)
    flagged = np.asarray(res.frontier_saturated)
    np.testing.assert_array_equal(reasons != 0, flagged)
    assert flagged[1] and not flagged[0]  # KL 2 of log 64 = 4.2 nats: beyond what 64 draws support
    rows = res.rows()
    assert rows[0]["frontier_reasons"] == "" and rows[1]["frontier_reasons"] == reason_names(int(reasons[1]))
    assert f"({rows[1]['frontier_reasons']})" in rows[1]["note"]



def _model_answers(plain, past: int, value: float, lo: float, share: float, reasons: int):
    """A stand-in for an inversion with ``tail="gpd"`` (the tail model's own results are tested in
    test_tail_inversion.py): the plain solver's answer, and on its lanes with status ``past`` the model's
    ``value`` [``lo``, inf], ``reasons`` and ``carried_share`` ``share``, status ``EXTRAPOLATED``."""
    from jaxlimits.status import Status
    from jaxlimits.tail import TailSolution

    def solve(samples, targets, *, tail=None, tail_level=None, tail_replicates=None, **kw):
        sol = plain(samples, targets, **kw)
        ext = np.asarray(sol.status) == past
        nan = np.full(ext.shape, np.nan)
        at = lambda v: np.where(ext, v, nan)  # noqa: E731
        answer = "gain" if past == Status.KL_AT_OR_ABOVE_CEILING else "kl"
        lims = {f"{k}_{e}": at(x) for k, low in (("beta", 0.5), ("kl", lo), ("gain", lo))
                for e, x in (("lo", low), ("hi", np.inf))}
        ts = TailSolution(
            beta=at(0.5), kl=at(value if answer == "kl" else targets), gain=at(value if answer == "gain" else targets),
            **lims, no_tilt=ext & False, beyond_end=ext & False, fitted=ext | True,
            reasons=np.where(ext, reasons, 0), level=0.95, replicates=2,
            measured_beta=nan, measured_kl=nan, measured_gain=nan, measured_status=np.where(ext, past, 0),
            measured_reasons=np.zeros(ext.shape, np.int32), not_applied=ext & False, carried_share=at(share))
        return sol._replace(
            status=np.where(ext, int(Status.EXTRAPOLATED), sol.status), extrapolated=ext, tail=ts,
            reasons=np.where(ext, reasons, sol.reasons), **{answer: np.where(ext, value, getattr(sol, answer))},
            gain_se=np.where(ext, np.inf, sol.gain_se), kl_se=np.where(ext, np.inf, sol.kl_se))
    return solve


def test_a_model_point_carried_by_a_few_prompts_says_so(monkeypatch, capsys):
    """With a tail model, an extrapolated lane keeps the model's reasons (``few``: the pooled point rests on a
    few prompts) and its carried share, for the frontier and for KL*(gain); the note says the left on the
    table and the efficiencies from that point are not to be read (--out still has them); excess_z is NaN
    (no z against a model's interval)."""
    from jaxlimits import estimators, inversion
    from jaxlimits.cli.compare import print_table
    from jaxlimits.status import Status

    few, both = estimators.FEW, estimators.FEW | estimators.NO_TILT
    monkeypatch.setattr(inversion, "max_gain_at_kl", _model_answers(
        inversion.max_gain_at_kl, Status.KL_AT_OR_ABOVE_CEILING, 5.0, 1.0, 0.9, few))
    monkeypatch.setattr(inversion, "min_kl_for_gain", _model_answers(
        inversion.min_kl_for_gain, Status.GAIN_AT_OR_ABOVE_MAX, 3.0, 0.2, 0.8, both))
    r = np.random.default_rng(0).standard_normal((20, 64))  # the shape of test_flagged_frontier_says_why
    res = jl.compare(jl.Samples(r), [Run("small", 0.01, 0.1), Run("far", 10.0, 1.0), Run("high", 1.0, 9.0)],
                     tail="gpd")
    small, far, high = res.rows()
    assert small["frontier_reasons"] == "" and small["frontier_carried_share"] is None and "few" not in small["note"]
    assert far["status"] == "extrapolated" and far["frontier_reasons"] == "few"
    assert far["frontier_carried_share"] == pytest.approx(0.9)
    assert far["excess_z"] is None  # no z against a model's interval (NaN: empty in rows)
    assert far["left_on_table"] == pytest.approx(4.0) and far["reward_efficiency"] == pytest.approx(0.2)
    assert ("the largest 1 of the 20 prompts hold 90% of its KL" in far["note"]
            and "not its point, nor the left on the table 4 [0, inf] and reward efficiency 0.2 [0, 1]" in far["note"])
    assert high["min_kl_status"] == "extrapolated" and high["min_kl_reasons"] == "no-tilt+few"
    assert high["min_kl_carried_share"] == pytest.approx(0.8) and far["min_kl_reasons"] == ""
    assert "KL*(gain) flagged few" in high["note"] and "nor the KL efficiency 3 derived from it" in high["note"]
    print_table(res.rows())
    table = capsys.readouterr().out
    far_line = next(x for x in table.splitlines() if x.startswith("far "))
    assert far_line.endswith("extrapolated (few)") and " [1, inf]" in far_line and " 5 [" not in far_line
    # (the frontier at the run's KL is trusted: no reasons of its own before KL*'s)
    assert next(x for x in table.splitlines() if x.startswith("high ")).endswith(" (KL* no-tilt+few)")
    assert "the largest 5% of the prompts hold up to 90% of the model's pooled KL" in table

# ------------------------------------------------------------------------------------------------
# Real data: GSM8K, Qwen2.5-0.5B-Instruct base samples and a GRPO run against a proxy reward.


def _gsm8k(name):
    return io.load(data_file(name), prompt="prompt_id", reward="rm_logit")


@pytest.mark.data
@pytest.mark.slow
def test_gsm8k_base_frontier_bon_and_grpo_checkpoints(tmp_path):
    base = _gsm8k("gsm8k_qwen25_05b_base_200x4.jsonl")
    log = data_file("gsm8k_grpo_proxy_train_metrics.jsonl")
    s = base.samples
    assert (s.num_prompts, s.num_samples) == (200, 4)
    # The training log's KL is per token: taken as given unless the unit is stated ...
    raw, notes = load_runs(log, kl="kl", reward="reward_mean", baseline=0.0, name="step", where={"step": [200, 500]})
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    by_step = {int(x["step"]): x for x in lines}
    assert [r.kl for r in raw] == [by_step[200]["kl"], by_step[500]["kl"]]
    assert any("as given" in n for n in notes)
    # ... and converted with the logged mean completion length when it is.
    tok, notes = load_runs(log, kl="kl", reward="reward_mean", baseline=0.0, name="step", unit="token",
                           length="mean_completion_len", where={"step": [200, 500]})
    want = [by_step[k]["kl"] * by_step[k]["mean_completion_len"] for k in (200, 500)]
    assert [sequence_kl(r)[0] for r in tok] == pytest.approx(want, rel=1e-12)
    # The step-200 and step-500 policies' gains from their own samples on the same prompts.
    runs = []
    for r, step in zip(tok, (200, 500)):
        pol = _gsm8k(f"gsm8k_qwen25_05b_step{step}_200x4.jsonl")
        assert pol.prompt_ids == base.prompt_ids
        run = run_from_samples(f"GRPO step {step}", pol.samples, s, kl=r.kl, unit="token",
                               completion_length=r.completion_length)
        d = np.asarray(pol.samples.rewards).mean(1) - np.asarray(s.rewards).mean(1)
        assert abs(run.gain - d.mean()) < 1e-12 and run.gain > 0
        runs.append(run)
    res = jl.compare(s, runs)
    # 4 samples per prompt show at most log 4 nats; both checkpoints spent far more (per sequence)
    r = np.asarray(s.rewards)
    ceiling = np.mean(np.log(4 / np.sum(r == r.max(axis=1, keepdims=True), axis=1)))  # mean log(N / m)
    assert 0 < ceiling <= math.log(4)
    assert np.all(np.asarray(res.kl) > ceiling) and np.all(np.asarray(res.lower_bound))
    assert not np.any(np.asarray(res.above_frontier))  # a lower bound can never be "impossible"
    assert all("per token" in n and "lower bound" in n for n in res.notes)
    # Best-of-n on the same base samples, and its efficiency against the 4-sample frontier.
    b = bon.best_of_n(s, [1, 2, 3, 4])
    assert np.all(np.asarray(b.gain)[1:] > 0) and np.isnan(float(b.gain_se[-1]))
    eff = np.asarray(b.efficiency)[1:]
    assert np.all(np.isfinite(eff)) and np.all(eff > 0.5)
    # The real picture (the paper's Figure 1 on this data), headless.
    fig = plot.frontier_figure(s, bon=b, runs=res, path=tmp_path / "gsm8k.png", reward_label="proxy RM")
    assert (tmp_path / "gsm8k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog"  # the GRPO policies spent far more KL than 4 samples can show
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"GRPO step 200", "GRPO step 500", "best-of-n"} <= set(legend)


# ------------------------------------------------------------------------------------------------
# The command line (in process; the same synthetic data as tests/test_plot.py, so compilations are shared)


def _synthetic_file(tmp_path, prompts=16, samples=64, seed=11):
    rows = np.random.default_rng(seed).standard_normal((prompts, samples))
    lines = [f"{p},{i},{v!r}" for p in range(prompts) for i, v in enumerate(rows[p].tolist())]
    path = tmp_path / "samples.csv"
    path.write_text("prompt_id,sample_id,reward\n" + "\n".join(lines) + "\n")
    return path


def test_cli_compare_writes_table_json_and_figure(tmp_path, capsys):
    samples = _synthetic_file(tmp_path)
    runs = _write_csv(tmp_path / "runs.csv", ["name", "kl", "gain", "gain_se"],
                      [["ppo", 0.5, 0.6, 0.02], ["grpo", 1.0, 0.8, 0.03], ["liar", 0.3, 2.5, 0.01]])
    out, png = tmp_path / "cmp.json", tmp_path / "fig1.png"
    argv = ["compare", str(samples), "--runs", str(runs), "--run-gain-col", "gain", "--run-gain-se-col", "gain_se",
            "--run-name-col", "name", "--bon", "1", "2", "4", "--plot", str(png), "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "ppo " in text and "name ppo" not in text and "ABOVE" in text and "as given" in text  # named by value
    doc = json.loads(out.read_text())
    rows = {r["name"]: r for r in doc["rows"]}
    assert rows["liar"]["above_frontier"] and not rows["ppo"]["above_frontier"]
    assert 0 < rows["ppo"]["reward_efficiency"] < 1
    assert rows["ppo"]["gain_se"] == 0.02 and rows["ppo"]["kl_se"] is None  # no --run-kl-se-col: null, not 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # never overwrite without --force
    assert main(argv) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    # a per-token KL needs its length; nothing is computed on a usage error
    bad = ["compare", str(samples), "--runs", str(runs), "--run-gain-col", "gain", "--kl-unit", "token"]
    assert main(bad) == 2
    assert "--length-col" in capsys.readouterr().err
    # a table with columns kl and gain needs no options (it matches no trainer's log: said in a note)
    out2 = tmp_path / "plain.json"
    assert main(["compare", str(samples), "--runs", str(runs), "--out", str(out2)]) == 0
    assert "read as a table of runs" in capsys.readouterr().out
    plain = {r["name"]: r for r in json.loads(out2.read_text())["rows"]}
    assert plain["ppo"]["gain"] == rows["ppo"]["gain"] and plain["grpo"]["kl"] == rows["grpo"]["kl"]
    assert plain["ppo"]["kl_se"] is None and plain["ppo"]["gain_se"] is None


@pytest.mark.parametrize("kl, gain, error", [
    ("-1.0", "0.3", r"r\.csv:line 2: run 0 \('bad'\): kl \(column 'kl'\) = -1\.0 is negative"),
    ("0.5", "nan", r"r\.csv:line 2: column 'gain' is 'nan', not a finite number"),
    ("abc", "0.3", r"r\.csv:line 2: column 'kl' has a non-numeric value 'abc'"),
])
def test_cli_plain_runs_table_reports_its_own_errors(tmp_path, capsys, kl, gain, error):
    """A table with columns kl and gain is read as a table of runs: a bad value in it is the error
    (file, line, column), not 'the log's keys match no trainer'."""
    samples = _synthetic_file(tmp_path, prompts=2, samples=4)
    runs = tmp_path / "r.csv"
    runs.write_text(f"name,kl,gain\nbad,{kl},{gain}\n")
    assert main(["compare", str(samples), "--runs", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "match no trainer" not in err
    assert re.search(error + r" \(read as a table of runs", err), err
    # a table without both columns is not a table of runs: the trainer error stands
    runs.write_text("name,kl,reward\nbad,0.5,0.2\n")
    assert main(["compare", str(samples), "--runs", str(runs)]) == 2
    assert "match no trainer" in capsys.readouterr().err


def test_a_run_above_the_samples_cap_past_the_ceiling():
    """Past the ceiling the frontier is only bounded below by the samples' cap: for a run whose gain is above
    the cap, 'left on the table' is at least a negative number, and the note says what that cannot tell."""
    r = np.random.default_rng(0).standard_normal((20, 64))  # the shape of test_flagged_frontier_says_why
    row = jl.compare(jl.Samples(r), [Run("huge", 10.0, 9.0)]).rows()[0]
    assert row["status"] == "unknown" and row["left_on_table_lower_bound"] < 0 < row["frontier_gain_lower_bound"]
    assert "cannot tell whether the run is below the frontier or above it" in row["note"]
