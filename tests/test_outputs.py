"""Every output says exactly what it is (issue 13, items 1-4, 6, 7): labels, units, unknowns, counts, the README."""

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import data_file

import jaxlimits as jl
from jaxlimits import plot
from jaxlimits.cli import build_parser, main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}: not strict JSON")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def _write(path, rows, header):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def four_draws(tmp_path_factory):
    """6 prompts x 4 draws with a 0/1 score: the KL the samples can show is at most log 4."""
    rng = np.random.default_rng(5)
    r = np.round(rng.standard_normal((6, 4)), 3)
    s = (r + rng.standard_normal((6, 4)) > 0).astype(int)
    path = tmp_path_factory.mktemp("four") / "four.csv"
    rows = [[p, r[p, i], s[p, i]] for p in range(6) for i in range(4)]
    return _write(path, rows, ["prompt_id", "rm", "correct"]), r, s


# -- item 1: a score is not the reward ---------------------------------------------------------


@pytest.mark.slow
def test_a_scores_curve_is_labelled_and_never_shaded_unreachable(four_draws, tmp_path, capsys):
    path, r, s01 = four_draws
    out = tmp_path / "f.csv"
    assert main(["frontier", str(path), "--reward-col", "rm", "--score-col", "correct", "--betas", "2", "1", "0.5",
                 "--out", str(out), "--x64"]) == 0
    text = capsys.readouterr().out
    assert "not a frontier: the 'correct' gain of the policies tilted toward 'rm'" in text
    head = next(line for line in text.splitlines() if line.split()[:1] == ["beta"])
    assert "correct gain" in head
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert {row["curve"] for row in rows} == {"correct gain of the policy tilted toward rm"}
    betas = [2.0, 1.0, 0.5]
    fig = plot.frontier_figure(jl.frontier(jl.Samples(r, scores=s01.astype(float)), betas), score_label="correct",
                               reward_label="rm")
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert not any("unreachable" in t for t in legend)
    assert any(t.startswith("correct gain of the policy aligned to rm (not a correct frontier)") for t in legend)
    assert ax.get_ylabel() == "correct gain  E_π[s] − E_π₀[s]  [correct units]"
    # a true frontier is in the reward's units; it is shaded unreachable only above trusted points, and
    # with 4 draws per prompt no point is trusted (reason "few"): nothing is shaded
    ax = plot.frontier_figure(jl.frontier(jl.Samples(r), betas), reward_label="rm").axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert not any(t.startswith("unreachable") for t in legend)
    assert any(t.startswith("frontier, not trustworthy (") and "few" in t for t in legend)
    assert ax.get_ylabel().endswith("[rm units]")


def test_bon_shows_the_gain_its_efficiency_is_computed_from(capsys):
    from jaxlimits.cli.bon import print_table

    row = {"n": 2, "gain": 0.07375, "gain_se": 0.012, "reward_gain": 1.957, "reward_gain_se": 0.08, "kl": 0.1924,
           "kl_analytic": 0.1931, "kl_exact": 0.1736, "kl_beirami": float("nan"), "frontier_gain": 1.789,
           "frontier_gain_se": 0.043, "efficiency": 1.957 / 1.789, "win_rate": 0.6667, "win_rate_se": 0.0,
           "win_rate_frontier": 0.6694, "status": "saturated"}
    print_table([row], reward="rm_logit", score="correct")
    text = capsys.readouterr().out
    head, line = text.splitlines()[:2]
    assert "rm_logit gain" in head and "correct gain" in head
    assert "1.957 ± 0.08" in line and "0.07375 ± 0.012" in line and "1.09" in line  # 1.957 / 1.789
    assert "effic. = rm_logit gain / frontier at the same KL" in text and "in 'correct' units" in text


# -- item 2: unknown is not a number ------------------------------------------------------------


@pytest.mark.slow
def test_compare_past_the_ceiling_is_unknown_with_its_bounds(four_draws, tmp_path, capsys):
    path, r, _ = four_draws
    runs = _write(tmp_path / "runs.csv", [["near", 0.05, 0.1], ["far", 5.0, 0.5]], ["name", "kl", "gain"])
    out_json, out_csv = tmp_path / "c.json", tmp_path / "c.csv"
    argv = ["compare", str(path), "--reward-col", "rm", "--runs", str(runs), "--run-gain-col", "gain",
            "--run-name-col", "name", "--x64"]
    assert main([*argv, "--out", str(out_json)]) == 0
    text = capsys.readouterr().out
    cap = float(np.mean(r.max(1) - r.mean(1)))  # best-of-4's gain: the frontier past log 4 is at least this
    far = next(line for line in text.splitlines() if line.startswith("far "))
    assert far.split()[-1] == "unknown" and f"≥ {cap:.4g}" in far and f"≤ {0.5 / cap:.4g}"[:5] in far
    rows = {row["name"]: row for row in _strict_json(out_json)["rows"]}
    f = rows["far"]
    assert f["status"] == "unknown" and f["lower_bound"] is True
    for key in ("frontier_gain", "left_on_table", "reward_efficiency", "excess_z", "above_frontier",
                "frontier_saturated"):
        assert f[key] is None, key
    assert f["frontier_gain_lower_bound"] == pytest.approx(cap, rel=1e-12)
    assert f["left_on_table_lower_bound"] == pytest.approx(cap - 0.5, rel=1e-12)
    assert f["reward_efficiency_upper_bound"] == pytest.approx(0.5 / cap, rel=1e-12)
    assert "unknown, at least the samples' cap" in f["note"]
    n = rows["near"]
    assert n["status"] in ("ok", "saturated") and n["frontier_gain"] is not None
    assert n["frontier_gain_lower_bound"] is None
    # the same vocabulary and the same empty values in CSV
    assert main([*argv, "--out", str(out_csv)]) == 0
    capsys.readouterr()
    crow = {row["name"]: row for row in csv.DictReader(out_csv.read_text().splitlines())}
    assert crow["far"]["status"] == "unknown" and crow["far"]["frontier_gain"] == "" and crow["far"]["excess_z"] == ""
    assert crow["near"]["status"] == n["status"]


@pytest.mark.slow
def test_json_output_is_strict_everywhere(four_draws, tmp_path, capsys):
    path, *_ = four_draws
    out = tmp_path / "inv.json"
    assert main(["invert", str(path), "--reward-col", "rm", "--kl", "0.1", "9", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--kl 9: the KL budget is at or above what the samples can show" in err and "Traceback" not in err
    rows = _strict_json(out)["rows"]
    assert [r["status"] for r in rows][1] == "unknown" and rows[1]["gain"] is None and rows[1]["reason"]
    assert rows[0]["gain"] is not None


def test_invert_documents_its_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["invert", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0 when every target is solved; 2 when some are not" in text


# -- item 3: the proxy is compared at equal KL by default ---------------------------------------


def test_proxy_compares_at_equal_kl_by_default(capsys):
    from jaxlimits.cli.proxy import _print_curve

    args = build_parser().parse_args(["proxy", "f.jsonl", "--proxy", "rm", "--gold", "correct"])
    assert args.compare == "kl"
    row = {"beta": 2.172, "kl_proxy_aligned": 0.4188, "proxy_gain": 2.4, "gold_gain_proxy_aligned": 0.09282,
           "gold_gain_proxy_aligned_se": 0.008, "gold_frontier": 0.2375, "shortfall": 0.1447,
           "gold_frontier_is_lower_bound": True, "gold_gain_gold_aligned": 0.05, "gold_gain_gold_aligned_se": 0.002,
           "gap": -0.043, "gap_se": 0.008, "ratio": 0.007, "status": "saturated"}
    _print_curve([row], "kl", gold="'correct'", proxy="proxy 'rm'")
    text = capsys.readouterr().out
    assert "gold frontier (same KL)" in text and "gap (same beta)" not in text and "≥ 0.2375" in text
    _print_curve([row], "beta")
    text = capsys.readouterr().out
    assert "gap (same beta)" in text and "gold frontier (same KL)" not in text


@pytest.mark.slow
@pytest.mark.data
def test_gsm8k_gold_frontier_at_equal_kl_is_above_the_proxy_tilted_curve(capsys):
    """Issue 13's example: at KL ~0.42 the proxy-tilted policy's gold gain is ~0.093, the gold frontier 0.2375."""
    path = data_file("gsm8k_qwen25_05b_base_200x4.jsonl")
    argv = ["proxy", str(path), "--proxy", "rm_logit", "--gold", "correct", "--betas", "4", "2.172", "1", "--x64"]
    assert main(argv) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.split()[:1] == ["2.172"])
    assert "0.2375" in line  # the gold frontier at the same KL (a lower bound where marked ≥)
    # the command prints the bias-corrected curve; the values are the plug-in curve's
    from jaxlimits.ensembles import load_ensemble

    samples = load_ensemble(path, ["rm_logit"], "correct").ensemble.member(0)
    res = jl.overoptimization(samples, [4.0, 2.172, 1.0], same_kl=True, bias_correction=False)
    kl, gain = float(res.curve.kl_proxy_aligned[1]), float(res.curve.gold_gain_proxy_aligned[1])
    assert kl == pytest.approx(0.4188, abs=2e-3) and gain == pytest.approx(0.0928, abs=2e-3)
    assert float(res.gold_frontier[1]) == pytest.approx(0.2375, abs=1e-4)
    cells = line.split()
    corrected = jl.overoptimization(samples, [4.0, 2.172, 1.0])
    assert float(cells[1]) == pytest.approx(float(corrected.curve.kl_proxy_aligned[1]), abs=1e-4)
    assert float(cells[3]) == pytest.approx(float(corrected.curve.gold_gain_proxy_aligned[1]), abs=1e-4)


# -- item 4: summaries honour counts and weights ------------------------------------------------


def test_info_means_are_over_draws(tmp_path, capsys):
    path = tmp_path / "dup.jsonl"
    rows = [{"prompt_id": 0, "reward": 1.0, "h": "a"}] * 3 + [{"prompt_id": 0, "reward": 4.0, "h": "b"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["info", str(path), "--dedupe", "h"]) == 0
    assert "reward min/mean/max (mean over all draws): 1 / 1.75 / 4" in capsys.readouterr().out
    s = jl.Samples([[1.0, 4.0]], log_weights=[[0.0, math.log(3.0)]])  # pi0 puts 3/4 on the 4
    from jaxlimits.cli.info import describe

    d = describe(s)
    assert d["reward min/mean/max (mean over all draws)"][1] == pytest.approx(2.5)
    assert d["reward mean under pi0 (importance-weighted; mean over prompts)"] == pytest.approx(3.25)
    assert d["KL ceiling -log pi0(max r) (min/median/max)"][0] == pytest.approx(-math.log(0.75))


@pytest.mark.slow
@pytest.mark.data
def test_alpacafarm_deduplicated_mean_is_over_draws(capsys):
    path = data_file("alpacafarm_qwen3_4b_sft_20x512.jsonl")
    assert main(["info", str(path), "--dedupe", "response_sha1"]) == 0
    assert "reward min/mean/max (mean over all draws): -1.219 / 5.464 / 9.25" in capsys.readouterr().out


# -- item 6: the grid, the figure, the demo -----------------------------------------------------


@pytest.mark.parametrize("num", [2, 4, 11, 32])
def test_num_betas_gives_that_many_points(num):
    s = jl.Samples(np.random.default_rng(0).standard_normal((8, 64)))
    betas = jl.default_betas(s, num)
    assert len(betas) == num and np.all(np.diff(betas) < 0)


@pytest.mark.slow
def test_demo_leaves_no_folder_behind(tmp_path, monkeypatch, capsys):
    import tempfile

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for _ in range(2):
        assert main(["demo", "--num-betas", "4"]) == 0
    text = capsys.readouterr().out
    assert list(temp.iterdir()) == []
    assert f"drew {tmp_path / 'cache' / 'jaxlimits' / 'demo_frontier.png'}" in text
    status = re.compile(r" (ok|saturated)( \([a-z+-]+\))?$")  # a flagged point's reasons in brackets
    assert sum(bool(status.search(line)) for line in text.splitlines()) == 2 * 4


# -- item 7: the README's option table is what the parsers take ---------------------------------


def test_readme_option_table_matches_the_commands():
    table = re.search(r"\| option \| demo \|.*?\n\n", README, re.S).group(0).strip().splitlines()
    commands = [c.strip() for c in table[0].strip("|").split("|")][1:]
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    taken = {name: {o for a in sub.choices[name]._actions for o in a.option_strings} for name in commands}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        options = re.findall(r"`(--[a-z0-9-]+)`", cells[0])
        assert options, line
        for name, mark in zip(commands, cells[1:]):
            for option in options:
                said = "takes" if mark else "lacks"
                assert (option in taken[name]) == (mark == "✓"), f"README says {name} {said} {option}"


@pytest.mark.slow
@pytest.mark.data
def test_gsm8k_training_log_past_the_ceiling_is_unknown(tmp_path, capsys):
    """Issue 13's example: the GRPO log (per-token KL) against 4 base samples a prompt."""
    base = data_file("gsm8k_qwen25_05b_base_200x4.jsonl")
    log = data_file("gsm8k_grpo_proxy_train_metrics.jsonl")
    out = tmp_path / "c.json"
    assert main(["compare", str(base), "--reward-col", "rm_logit", "--runs", str(log), "--run-reward-col",
                 "reward_mean", "--run-name-col", "step", "--kl-unit", "token", "--length-col", "mean_completion_len",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = {r["name"]: r for r in _strict_json(out)["rows"]}
    unknown = [r for r in rows.values() if r["lower_bound"]]
    assert len(rows) == 50 and len(unknown) == 49  # every step but the first spent more than log 4 nats
    assert all(r["status"] == "unknown" and r["reward_efficiency"] is None and r["above_frontier"] is None
               and r["excess_z"] is None for r in unknown)
    last = rows["step 500"]
    assert last["left_on_table_lower_bound"] == pytest.approx(-3.58, abs=5e-3)
    assert last["reward_efficiency_upper_bound"] == pytest.approx(2.092, abs=5e-3)
    line = next(ln for ln in text.splitlines() if ln.startswith("step 500 "))
    assert "≥ -3.58" in line and "≤ 2.092" in line and line.split()[-1] == "unknown"


def test_status_words_can_be_added_and_are_explained():
    from jaxlimits import status

    word = status.register("few_draws_test", "a test reason")
    try:
        assert status.legend(["ok", word, "saturated", word]) == [
            "few_draws_test: a test reason", f"saturated: {status.VOCABULARY['saturated']}"]
        with pytest.raises(ValueError, match="already registered"):
            status.register(word, "another meaning")
        with pytest.raises(ValueError, match="lower case"):
            status.register("Bad Word", "x")
    finally:
        del status.VOCABULARY[word]
