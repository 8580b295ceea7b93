"""Runs as trainers log them (TRL, verl, OpenRLHF, W&B files built with made-up values); runs measured from samples."""

import csv
import json
import math

import numpy as np
import pytest

import jaxlimits as jl
from jaxlimits.cli import main
from jaxlimits.compare import load_policy_samples, load_runs, measure_run, sequence_kl
from jaxlimits.io import DataError
from jaxlimits.trainer_logs import SCHEMAS, detect_trainer, read_log, runs_from_log

BASELINE = 0.25


def _grpo_history():
    """A TRL GRPO log_history: three training rows, an eval row and the Trainer's final summary row."""
    row = lambda step, kl, reward, length: {  # noqa: E731
        "step": step, "epoch": step / 100, "loss": 0.01, "grad_norm": 1.5, "learning_rate": 1e-6,
        "kl": kl, "reward": reward, "reward_std": 0.8, "rewards/accuracy/mean": reward, "rewards/accuracy/std": 0.8,
        "completions/mean_length": length, "completions/min_length": 10.0, "completions/max_length": 512.0,
        "frac_reward_zero_std": 0.1, "entropy": 0.9, "clip_ratio/region_mean": 0.0}
    return [row(10, 0.0015, 0.35, 200.0), row(20, 0.004, 0.55, 180.0),
            {"step": 20, "epoch": 0.2, "eval_loss": 0.02, "eval_reward": 0.5},
            row(30, 0.006, 0.75, 150.0),
            {"step": 30, "epoch": 0.3, "train_runtime": 812.5, "train_samples_per_second": 1.2,
             "train_steps_per_second": 0.04, "total_flos": 0.0, "train_loss": 0.012}]


def _state(tmp_path, history, name="trainer_state.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"global_step": 30, "max_steps": 30, "log_history": history}, indent=2))
    return path


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------------
# TRL


def test_trl_grpo_trainer_state_per_token_kl_converted_with_its_length(tmp_path):
    runs, notes = runs_from_log(_state(tmp_path, _grpo_history()), baseline=BASELINE)
    assert [r.name for r in runs] == ["step 10", "step 20", "step 30"]
    assert all(r.unit == "token" for r in runs)
    assert [sequence_kl(r)[0] for r in runs] == pytest.approx([0.0015 * 200, 0.004 * 180, 0.006 * 150], rel=1e-15)
    assert [r.gain for r in runs] == pytest.approx([0.35 - BASELINE, 0.55 - BASELINE, 0.75 - BASELINE], rel=1e-15)
    text = "\n".join(notes)
    assert "trainer_state.json (log_history)" in text and "TRL GRPOTrainer" in text
    assert "summary row" in text and "log_history[4]" in text and "1 evaluation row" in text
    assert "k3" in text and "token-weighted" in text and "(exact)" in text
    assert "'reward', before the KL penalty" in text and "--trainer trl-rloo" in text


def test_summary_rows_filters_and_bad_values(tmp_path):
    hist = _grpo_history()
    hist[0]["kl"] = None                 # TRL writes None when a metric had no valid value
    runs, notes = runs_from_log(_state(tmp_path, hist), baseline=BASELINE)
    assert [r.name for r in runs] == ["step 20", "step 30"]
    assert any("skipped 1 row(s) without kl" in n and "log_history[0]" in n for n in notes)
    # the filter comes before any conversion: a bad value in a dropped row is never read
    hist[0]["kl"] = "oops"
    path = _state(tmp_path, hist)
    runs, notes = runs_from_log(path, baseline=BASELINE, where={"step": ["20", 30.0]})
    assert [r.name for r in runs] == ["step 20", "step 30"] and any("filtered before" in n for n in notes)
    with pytest.raises(DataError, match=r"log_history\[0\]: key 'kl' has a non-numeric value 'oops'"):
        runs_from_log(path, baseline=BASELINE)
    with pytest.raises(ValueError, match="no row of the log matches"):
        runs_from_log(path, baseline=BASELINE, where={"step": [99]})
    with pytest.raises(ValueError, match="no key 'stp'"):
        runs_from_log(path, baseline=BASELINE, where={"stp": [10]})


def test_negative_kl_within_noise_is_clipped_beyond_it_rejected(tmp_path):
    hist = _grpo_history()
    hist[0]["kl"] = -0.0001                  # -0.02 nats per sequence; the largest is 0.9: within 10%
    runs, notes = runs_from_log(_state(tmp_path, hist), baseline=BASELINE)
    assert runs[0].kl == 0.0 and sequence_kl(runs[0])[0] == 0.0
    assert any("1 negative KL(s)" in n and "-0.02 nats" in n and "log_history[0]" in n for n in notes)
    with pytest.raises(DataError, match=r"log_history\[0\].*negative beyond the estimator's noise"):
        runs_from_log(_state(tmp_path, hist), baseline=BASELINE, negative_tolerance=0.01)
    hist[0]["kl"] = -0.001                   # -0.2 nats: beyond 10% of 0.9
    with pytest.raises(DataError, match="tolerance 0.09 nats"):
        runs_from_log(_state(tmp_path, hist), baseline=BASELINE)


def test_grpo_without_kl_is_reported_with_what_to_do(tmp_path):
    hist = [{k: v for k, v in row.items() if k != "kl"} for row in _grpo_history()]   # beta = 0 (TRL's default)
    with pytest.raises(ValueError, match=r"beta is non-zero.*--policy-samples"):
        runs_from_log(_state(tmp_path, hist), baseline=BASELINE)


def test_trl_rloo_reward_before_the_penalty_is_the_sum_of_the_reward_functions(tmp_path):
    hist = []
    for step, kl, fa, fb, length in ((10, 0.01, 0.2, 0.1, 100.0), (20, 0.02, 0.4, 0.3, 90.0)):
        seq_kl = kl * length
        hist.append({"step": step, "kl": kl, "rewards/a/mean": fa, "rewards/b/mean": fb, "rewards/a/std": 1.0,
                     "reward": fa + fb - 0.05 * seq_kl, "completions/mean_length": length})
    path = _state(tmp_path, hist)
    grpo, _ = runs_from_log(path, baseline=0.0)                          # detection assumes GRPO ...
    assert [r.gain for r in grpo] == pytest.approx([h["reward"] for h in hist])
    runs, notes = runs_from_log(path, baseline=0.0, trainer="trl-rloo")  # ... and the user says RLOO
    assert [r.gain for r in runs] == pytest.approx([0.3, 0.7], rel=1e-15)
    assert [sequence_kl(r)[0] for r in runs] == pytest.approx([1.0, 1.8], rel=1e-15)
    text = "\n".join(notes)
    assert "as --trainer says" in text and "not 'reward', which is after it" in text and "weights are 1" in text
    assert "k1" in text


def test_trl_ppo_sequence_kl_and_scores_before_the_penalty(tmp_path):
    hist = [{"step": s, "episode": 64 * s, "eps": 3, "objective/kl": 0.4 * s / 10, "objective/entropy": 30.0,
             "objective/non_score_reward": -0.02 * s / 10, "objective/rlhf_reward": 0.1 * s / 10 - 0.02 * s / 10,
             "objective/scores": 0.1 * s / 10, "policy/approxkl_avg": 0.003, "loss/policy_avg": -0.01}
            for s in (10, 20)]
    hist.append({"step": 20, "train_runtime": 5.0, "train_loss": 0.0})
    runs, notes = runs_from_log(_state(tmp_path, hist), baseline=0.05)
    assert [(r.kl, r.unit, r.completion_length) for r in runs] == [(0.4, "sequence", None), (0.8, "sequence", None)]
    assert [r.gain for r in runs] == pytest.approx([0.05, 0.15], rel=1e-14)
    text = "\n".join(notes)
    assert "TRL PPOTrainer" in text and "per-sequence sum" in text and "'objective/scores'" in text
    assert "not used as the KL: 'policy/approxkl_avg'" in text and "not 'objective/rlhf_reward'" in text


def test_a_log_history_list_and_its_w_and_b_history_are_read_alike(tmp_path):
    hist = _grpo_history()[:2]
    bare = tmp_path / "log_history.json"
    bare.write_text(json.dumps(hist))
    direct, _ = runs_from_log(bare, baseline=BASELINE)
    # the same rows as transformers' WandbCallback sends them ("train/" prefix), as a W&B run history table
    wb = [{"_step": i, "_runtime": 3.0 * i, "train/global_step": h["step"],
           **{f"train/{k}": v for k, v in h.items() if k not in ("step",)}} for i, h in enumerate(hist)]
    path = _jsonl(tmp_path / "history.jsonl", wb)
    runs, notes = runs_from_log(path, baseline=BASELINE)
    assert [sequence_kl(r)[0] for r in runs] == pytest.approx([sequence_kl(r)[0] for r in direct], rel=1e-15)
    assert [r.name for r in runs] == ["step 10", "step 20"]
    assert any("W&B train/ prefixes" in n for n in notes)


# ------------------------------------------------------------------------------------------------
# verl


def _verl_rows(kl_keys=True):
    rows = [{"step": 0, "data": {"val-core/gsm8k/reward/mean@1": 0.41}}]   # validation before training
    for step, kl, score, length in ((1, 0.002, 0.45, 300.0), (2, 0.003, 0.55, 280.0)):
        data = {"actor/pg_loss": 0.01, "actor/ppo_kl": 0.0004 * step, "actor/pg_clipfrac": 0.01,
                "critic/score/mean": score, "critic/rewards/mean": score - 0.001 * kl * length,
                "response_length/mean": length, "response_length/max": 1024.0, "timing_s/step": 30.0}
        if kl_keys:
            data["actor/reward_kl_penalty"] = kl
            data["actor/reward_kl_penalty_coeff"] = 0.001
        rows.append({"step": step, "data": data})
    return rows


def test_verl_file_logger(tmp_path):
    path = _jsonl(tmp_path / "metrics.jsonl", _verl_rows())
    runs, notes = runs_from_log(path, baseline=0.4)
    assert [r.name for r in runs] == ["step 1", "step 2"]
    assert [sequence_kl(r)[0] for r in runs] == pytest.approx([0.6, 0.84], rel=1e-15)
    assert [r.gain for r in runs] == pytest.approx([0.05, 0.15], rel=1e-14)
    text = "\n".join(notes)
    assert "verl file-logger JSONL" in text and "verl (PPO/GRPO trainer)" in text
    assert "skipped 1 row(s) without kl, reward, length" in text and "metrics.jsonl:line 1" in text
    assert "not used as the KL: 'actor/ppo_kl'" in text and "not 'critic/rewards/mean'" in text
    assert "exact only if the per-token KL does not vary" in text
    # with the KL in the loss instead of the reward, actor/kl_loss is used, with its caveat said
    rows = _verl_rows(kl_keys=False)
    for r in rows[1:]:
        r["data"]["actor/kl_loss"] = 0.001
    runs, notes = runs_from_log(_jsonl(tmp_path / "kl_loss.jsonl", rows), baseline=0.4)
    assert [sequence_kl(r)[0] for r in runs] == pytest.approx([0.3, 0.28], rel=1e-15)
    assert any("micro-batch factor" in n for n in notes)


def test_verl_ppo_kl_is_never_the_run_s_kl(tmp_path):
    path = _jsonl(tmp_path / "metrics.jsonl", _verl_rows(kl_keys=False))
    with pytest.raises(ValueError, match=r"actor/ppo_kl: the KL between the rollout policy and the updated one.*"
                                         r"use_kl_in_reward.*--policy-samples"):
        runs_from_log(path, baseline=0.4)
    with pytest.raises(DataError, match="line 1: a verl file-logger line"):
        runs_from_log(_jsonl(tmp_path / "not_verl.jsonl", [{"step": 1, "kl": 0.1}]), baseline=0.0, fmt="verl")


# ------------------------------------------------------------------------------------------------
# OpenRLHF and W&B exports


def test_openrlhf_history_csv(tmp_path):
    path = tmp_path / "openrlhf_history.csv"
    path.write_text("_step,train/global_step,train/kl,train/reward,train/response_length,train/policy_loss\n"
                    "0,1,0.004,-0.5,250,0.1\n1,2,0.008,-0.1,200,0.1\n2,3,,0.2,190,0.1\n")
    runs, notes = runs_from_log(path, baseline=-0.6)
    assert [r.name for r in runs] == ["step 1", "step 2"]
    assert [sequence_kl(r)[0] for r in runs] == pytest.approx([1.0, 1.6], rel=1e-15)
    assert [r.gain for r in runs] == pytest.approx([0.1, 0.5], rel=1e-14)
    text = "\n".join(notes)
    assert "OpenRLHF" in text and "clamped to [-10, 10]" in text and "skipped 1 row(s) without kl" in text


def test_wandb_chart_exports_merged_by_run_and_step(tmp_path):
    kl = tmp_path / "kl.csv"
    kl.write_text('"Step","ppo-a - train/kl","ppo-a - train/kl__MIN","ppo-a - train/kl__MAX","ppo-b - train/kl",'
                  '"ppo-b - train/kl__MIN","ppo-b - train/kl__MAX"\n'
                  '10,0.01,0.009,0.011,0.02,0.019,0.021\n20,0.02,0.019,0.021,,,\n')
    rew = tmp_path / "reward.csv"
    rew.write_text("Step,ppo-a - train/reward,ppo-b - train/reward\n10,0.5,0.7\n20,0.9,\n")
    length = tmp_path / "length.csv"
    length.write_text("Step,ppo-a - train/response_length,ppo-b - train/response_length\n10,100,50\n20,100,\n")
    rows, notes = read_log([kl, rew, length])
    assert len(rows) == 3 and "2 run(s)" in notes[0] and "__MIN/__MAX" in notes[0]
    runs, notes = runs_from_log([kl, rew, length], baseline=0.5)
    got = {r.name: (sequence_kl(r)[0], r.gain) for r in runs}
    assert sorted(got) == ["ppo-a step 10", "ppo-a step 20", "ppo-b step 10"]
    want = {"ppo-a step 10": (1.0, 0.0), "ppo-a step 20": (2.0, 0.4), "ppo-b step 10": (1.0, 0.2)}
    for name, (k, g) in want.items():
        assert got[name] == pytest.approx((k, g), rel=1e-14, abs=1e-15)
    runs, _ = runs_from_log([kl, rew, length], baseline=0.5, where={"run": ["ppo-b"]})
    assert [r.name for r in runs] == ["ppo-b step 10"]
    with pytest.raises(ValueError, match="W&B chart exports"):
        read_log([kl, _state(tmp_path, _grpo_history())])


def test_unknown_keys_and_trainer_names(tmp_path):
    path = _jsonl(tmp_path / "custom.jsonl", [{"step": 10, "kl": 0.1, "reward_mean": 0.2}])
    with pytest.raises(ValueError, match="match no trainer.*--run-kl-col.*Keys: kl, reward_mean, step"):
        runs_from_log(path, baseline=0.0)
    with pytest.raises(ValueError, match="--trainer must be one of"):
        detect_trainer(read_log(path)[0], "ppo")
    with pytest.raises(ValueError, match="--runs-format must be one of"):
        read_log(path, "csv")
    bad = tmp_path / "trainer_state.json"
    bad.write_text('{"log_history": [\n  {"step": 1,\n}')
    with pytest.raises(DataError, match="trainer_state.json:line 3: not valid JSON"):
        runs_from_log(bad, baseline=0.0)
    assert set(SCHEMAS) == {"trl-grpo", "trl-rloo", "trl-ppo", "trl-ppo-legacy", "verl", "openrlhf"}
    assert all(s.kl_unit in ("token", "sequence") and s.source for s in SCHEMAS.values())


def test_table_runs_are_filtered_before_conversion(tmp_path):
    rows = [{"step": 10, "kl": 0.1, "gain": 0.2}, {"step": 20, "kl": None, "gain": None}]
    path = _jsonl(tmp_path / "log.jsonl", rows)
    runs, _ = load_runs(path, gain="gain", name="step", where={"step": [10]})
    assert [r.name for r in runs] == ["step 10"]
    with pytest.raises(DataError, match="line 2: column 'kl' has no value"):
        load_runs(path, gain="gain")


# ------------------------------------------------------------------------------------------------
# Measured from the policy's own samples


def test_measure_run_matches_numpy():
    rng = np.random.default_rng(3)
    d = [rng.normal(0.8, 0.5, size=m) for m in (5, 7, 6)]
    r = [rng.normal(1.0, 1.0, size=m) for m in (5, 7, 6)]
    base = jl.Samples(rng.normal(size=(3, 9)))
    pol = jl.Samples.from_ragged(r)
    ratio = np.zeros(pol.rewards.shape)
    for p, x in enumerate(d):
        ratio[p, : len(x)] = x
    m = measure_run("pol", pol, ratio, base)
    kl = np.mean([x.mean() for x in d])
    kl_se = math.sqrt(sum(x.var(ddof=1) / len(x) for x in d)) / 3
    t = [np.exp(-x) - 1 + x for x in d]
    assert m.run.kl == pytest.approx(kl, rel=1e-13) and m.run.kl_se == pytest.approx(kl_se, rel=1e-13)
    assert m.kl_k3 == pytest.approx(np.mean([x.mean() for x in t]), rel=1e-13)
    assert m.kl_k3_se == pytest.approx(math.sqrt(sum(x.var(ddof=1) / len(x) for x in t)) / 3, rel=1e-13)
    gain = np.mean([x.mean() for x in r]) - np.asarray(base.rewards).mean()
    assert m.run.gain == pytest.approx(gain, rel=1e-12) and m.run.unit == "sequence"
    assert "k1 =" in m.notes[0] and "k3 =" in m.notes[0]
    # log-ratios near 1 on every draw are no policy's own (E[exp(-d)] would be 1): k1 = 1, k3 = 1/e, flagged
    odd = measure_run("odd", jl.Samples([[0.0, 1.0, 2.0, 3.0]]), [[0.99, 1.0, 1.01, 1.0]], jl.Samples([[0.0, 1.0]]))
    assert odd.kl_k3 == pytest.approx(np.mean(np.exp(-np.array([0.99, 1.0, 1.01, 1.0])) - 1 + 1.0), rel=1e-12)
    assert any("k1 and k3 differ" in n for n in odd.notes)
    # the policy's own draws (a finite law, sampled): k1 and k3 agree within their noise, and with the exact KL
    pi, ref = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    ys = rng.choice(3, p=pi, size=(3, 4000))
    own = measure_run("own", jl.Samples(ys.astype(float)), np.log(pi[ys]) - np.log(ref[ys]), base)
    exact = float(np.sum(pi * np.log(pi / ref)))
    assert abs(own.run.kl - exact) < 4 * own.run.kl_se and abs(own.kl_k3 - exact) < 4 * own.kl_k3_se
    assert not any("differ" in n for n in own.notes)
    # noise below zero is 0; far below zero is an error (swapped log-probabilities)
    small = measure_run("p", jl.Samples([[0.0, 1.0]]), [[-0.3, 0.2]], jl.Samples([[0.0, 1.0]]))
    assert small.run.kl == 0.0 and "sampling noise" in small.notes[1]
    with pytest.raises(ValueError, match="swapped"):
        measure_run("p", jl.Samples([[0.0, 1.0, 2.0]]), [[-2.0, -2.1, -1.9]], jl.Samples([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        measure_run("p", pol, ratio[:, :2], base)


def test_load_policy_samples_follows_the_base_prompt_order(tmp_path):
    rows = [{"prompt_id": p, "reward": float(i) + (10.0 if p == "a" else 0.0), "logprob": -10.0 - i,
             "ref_logprob": -11.0 - 2 * i} for p in ("b", "a") for i in range(3)]
    path = _jsonl(tmp_path / "policy.jsonl", rows)
    s, ratio = load_policy_samples(path, prompt_ids=["a", "b"])
    np.testing.assert_array_equal(np.asarray(s.rewards), [[10.0, 11.0, 12.0], [0.0, 1.0, 2.0]])  # "a" first
    np.testing.assert_array_equal(ratio, [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    with pytest.raises(DataError, match="1 base prompt\\(s\\) missing"):
        load_policy_samples(path, prompt_ids=["a", "b", "c"])


# ------------------------------------------------------------------------------------------------
# The command line: no column options for a trainer's log


def _base_file(tmp_path):
    rng = np.random.default_rng(7)
    return _jsonl(tmp_path / "base.jsonl", [{"prompt_id": p, "reward": float(rng.normal())}
                                            for p in range(8) for _ in range(32)])


def test_cli_compare_reads_trl_grpo_and_ppo_logs_with_no_column_options(tmp_path, capsys):
    base = _base_file(tmp_path)
    out = tmp_path / "grpo.json"
    assert main(["compare", str(base), "--runs", str(_state(tmp_path, _grpo_history())), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "TRL GRPOTrainer" in text and "summary row" in text and "x 'completions/mean_length'" in text
    doc = json.loads(out.read_text())
    assert [r["kl"] for r in doc["rows"]] == pytest.approx([0.3, 0.72, 0.9], rel=1e-6)
    mean = np.mean([json.loads(x)["reward"] for x in base.read_text().splitlines()])
    assert doc["rows"][0]["gain"] == pytest.approx(0.35 - mean, rel=1e-5)
    ppo = _state(tmp_path, [{"step": s, "objective/kl": 0.1 * s, "objective/scores": 0.05 * s,
                             "objective/rlhf_reward": 0.0} for s in (1, 2, 3)], name="ppo_state.json")
    assert main(["compare", str(base), "--runs", str(ppo)]) == 0
    text = capsys.readouterr().out
    assert "TRL PPOTrainer" in text and "per-sequence sum" in text and "step 3" in text
    # a table of runs still needs its columns named; a log's options do not mix with them
    assert main(["compare", str(base), "--runs", str(ppo), "--run-kl-col", "objective/kl"]) == 2
    assert "--run-gain-col or --run-reward-col" in capsys.readouterr().err
    assert main(["compare", str(base)]) == 2
    assert "--policy-samples" in capsys.readouterr().err


def test_cli_compare_policy_samples(tmp_path, capsys):
    base = _base_file(tmp_path)
    rng = np.random.default_rng(8)
    rows = [{"prompt_id": p, "reward": float(rng.normal(0.3)), "logprob": -50.0, "ref_logprob": -50.0 - float(x)}
            for p in range(8) for x in rng.normal(0.4, 0.2, size=8)]
    pol = _jsonl(tmp_path / "policy.jsonl", rows)
    out = tmp_path / "m.csv"
    assert main(["compare", str(base), "--policy-samples", str(pol), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "policy: KL measured from 64 policy samples on 8 prompts" in text and "k3 =" in text
    table = [line for line in text.splitlines() if line.startswith("policy ")]
    assert len(table) == 1
    with out.open() as fh:
        row = next(csv.DictReader(fh))
    d = np.array([json.loads(x)["logprob"] - json.loads(x)["ref_logprob"] for x in pol.read_text().splitlines()])
    assert float(row["kl"]) == pytest.approx(d.mean(), rel=1e-5) and float(row["kl_se"]) > 0
