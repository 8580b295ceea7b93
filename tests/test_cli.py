"""The command line as a user runs it (subprocess): good input, bad input (exit 2, no traceback), --force."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest


def run(*args, cwd=None, env=None):
    res = subprocess.run([sys.executable, "-m", "jaxlimits.cli", *map(str, args)], capture_output=True, text=True,
                         timeout=900, cwd=cwd, env=env)
    assert "Traceback" not in res.stderr, res.stderr
    return res


@pytest.fixture(scope="module")
def samples_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "samples.jsonl"
    with open(path, "w") as f:
        for p in range(12):
            for _ in range(300):
                r = float(np.round(rng.normal(), 2))
                row = {"prompt_id": p, "reward": r, "gold": r + float(rng.normal()),
                       "response_sha1": f"{p}-{int(r * 100)}"}
                f.write(json.dumps(row) + "\n")
    return path


def test_demo_prints_the_frontier_and_writes_json(tmp_path):
    out = tmp_path / "demo.json"
    res = run("demo", "--num-betas", "8", "--out", out)
    assert res.returncode == 0, res.stderr
    assert "200 prompts" in res.stdout and "KL (nats)" in res.stdout
    data = json.loads(out.read_text())
    assert data["meta"]["command"] == "demo" and data["meta"]["version"]
    rows = data["rows"]
    kl = [r["kl"] for r in rows]
    assert len(rows) >= 8 and kl == sorted(kl)
    # no overwrite without --force, and the file is left untouched
    before = out.read_bytes()
    res = run("demo", "--num-betas", "8", "--out", out)
    assert res.returncode == 2 and "exists; pass --force" in res.stderr
    assert out.read_bytes() == before
    assert run("demo", "--num-betas", "8", "--out", out, "--force").returncode == 0


def test_frontier_and_info_on_a_file(samples_file, tmp_path):
    out = tmp_path / "f.csv"
    res = run("frontier", samples_file, "--score-col", "gold", "--dedupe", "response_sha1", "--betas", "4", "2", "1",
              "--out", out, "--x64")
    assert res.returncode == 0, res.stderr
    assert "deduplicated by 'response_sha1'" in res.stdout
    lines = out.read_text().splitlines()
    assert lines[0].startswith("beta,kl,kl_se,kl_lo,kl_hi,gain,gain_se,gain_lo,gain_hi") and len(lines) == 4
    res = run("info", samples_file)
    assert res.returncode == 0 and "prompts: 12" in res.stdout


def test_compiled_programs_are_kept_between_runs(samples_file, tmp_path):
    """The console script caches compiled XLA programs on disk; a cached run gives the same table."""
    cache = tmp_path / "xla"
    # not the test run's cache, nor its fast-compile XLA_FLAGS (tests/conftest.py): with them a program can
    # compile in under the cache's threshold (jaxlimits.cache.MIN_COMPILE_SECONDS) and not be written
    user = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "XLA_FLAGS")}
    env = {**user, "JAXLIMITS_CACHE_DIR": str(cache)}
    outs = [tmp_path / "first.json", tmp_path / "second.json"]
    for out in outs:
        res = run("frontier", samples_file, "--betas", "4", "2", "1", "--out", out, "--x64", env=env)
        assert res.returncode == 0, res.stderr
        assert any(cache.iterdir()), "nothing was cached"
    first, second = (json.loads(out.read_text()) for out in outs)
    assert first["rows"] == second["rows"]
    # turned off, the command still runs (with the run's fast-compile XLA_FLAGS again: nothing is cached here)
    off = {**user, "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "JAXLIMITS_CACHE_DIR": ""}
    res = run("frontier", samples_file, "--betas", "4", "--out", tmp_path / "third.json", env=off)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["frontier", "missing.jsonl"], "missing.jsonl: no such file"),
        (["frontier", "{file}", "--reward-col", "nope"], "no column 'nope' (set it with --reward-col)"),
        (["frontier", "{file}", "--betas", "1", "-2"], "betas[1] = -2.0 is not a positive finite number"),
        (["frontier", "{file}", "--out", "x.txt"], "--out x.txt: use a file name ending in .csv or .json"),
        (["frontier", "{file}", "--memory-budget", "0.0001"], "memory_budget"),
        (["info", "{bad}"], "line 2: column 'reward' has a non-numeric value 'oops'"),
    ],
)
def test_bad_input_exits_2_with_a_message(samples_file, tmp_path, args, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_id": 0, "reward": 1}\n{"prompt_id": 0, "reward": "oops"}\n')
    args = [a.format(file=samples_file, bad=bad) for a in args]
    res = run(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert message in res.stderr, res.stderr


def test_help_lists_every_command_with_examples():
    res = run("--help")
    assert res.returncode == 0
    from jaxlimits.cli import COMMANDS

    for name in COMMANDS:
        assert name in res.stdout
    assert "examples:" in res.stdout
