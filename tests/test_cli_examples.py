"""Every example shown by ``jaxlimits <command> --help`` runs, on data shaped as the example expects."""

import gzip
import json
import shlex

import numpy as np
import pytest

from jaxlimits import cli


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("examples")
    rng = np.random.default_rng(0)
    rows, base, gsm, alpaca = [], [], [], []
    for p in range(8):
        for _ in range(256):
            r = float(np.round(rng.normal(), 2))
            rows.append({"prompt_id": p, "reward": r, "gold": r + float(rng.normal(0, 0.5)),
                         "response_sha1": f"{p}-{r}", "logprob": float(-rng.exponential(20.0))})
            z = float(rng.normal())
            base.append({"prompt_id": p, "rm_logit": z})
            gsm.append({"prompt_id": p, "rm_logit": z, "correct": int(z + rng.normal() > 0.5)})
            g = float(rng.normal())
            alpaca.append({"prompt_id": p, "gold": g, "rm": g + float(rng.normal()), "mrm": 2 * g + float(rng.normal()),
                           "rm_center": g + float(rng.normal(0, 2))})
    _write_jsonl(d / "samples.jsonl", rows)
    with gzip.open(d / "samples.jsonl.gz", "wt") as f:  # compressed, as sample dumps are kept
        f.write((d / "samples.jsonl").read_text())
    _write_jsonl(d / "base.jsonl", base)
    _write_jsonl(d / "gsm8k.jsonl", gsm)
    _write_jsonl(d / "alpaca.jsonl", alpaca)
    (d / "runs.csv").write_text("name,kl,gain\nppo,0.5,0.4\ngrpo,1.0,0.6\n")
    _write_jsonl(d / "train_log.jsonl", [{"step": 10 * k, "reward_mean": 0.05 * k, "kl": 0.001 * k,
                                          "mean_completion_len": 200.0} for k in range(1, 6)])
    history = [{"step": 20 * k, "kl": 0.001 * k, "reward": 0.1 * k, "completions/mean_length": 150.0}
               for k in range(1, 4)]
    (d / "trainer_state.json").write_text(json.dumps({"log_history": history + [{"step": 60, "train_loss": 0.1,
                                                                                  "train_runtime": 9.0}]}))
    _write_jsonl(d / "verl_metrics.jsonl", [{"step": k, "data": {"actor/reward_kl_penalty": 0.001 * k,
                                                                 "critic/score/mean": 0.1 * k, "actor/ppo_kl": 0.01,
                                                                 "response_length/mean": 300.0}} for k in range(1, 4)])
    _write_jsonl(d / "policy.jsonl", [{"prompt_id": p, "rm_logit": float(rng.normal(0.2)), "logprob": -40.0,
                                       "ref_logprob": -40.0 - float(rng.normal(0.3, 0.1))}
                                      for p in range(8) for _ in range(16)])
    return d


def _examples():
    out = []
    for name in cli.COMMANDS:
        module = __import__(f"jaxlimits.cli.{name}", fromlist=["EXAMPLES"])
        out.extend(module.EXAMPLES)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("example", _examples())
def test_help_example_runs(example, workdir, monkeypatch, capsys, tmp_path):
    # `demo --write-data .` writes the files the others name: in a folder of its own, not over theirs
    monkeypatch.chdir(tmp_path if "--write-data" in example else workdir)
    argv = shlex.split(example)
    assert argv[0] == "jaxlimits"
    argv = argv[1:]
    if "--out" in argv or "--plot" in argv:
        argv.append("--force")  # a second example may write the same file name
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 0, f"{example}\n{out}\n{err}"
