"""Real reward-model scores (AlpacaFarm, Qwen3-4B SFT, 20 prompts x 512 samples; skipped when absent)."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import data_file

import jaxlimits as jl
from jaxlimits import estimators, io

pytestmark = pytest.mark.data
FILE = "alpacafarm_qwen3_4b_sft_20x512.jsonl"


@pytest.fixture(scope="module")
def raw_and_deduped():
    path = data_file(FILE)
    return io.load(path), io.load(path, dedupe="response_sha1")


def test_dedupe_gives_the_same_frontier_as_the_raw_rows(raw_and_deduped):
    raw, dd = raw_and_deduped
    assert raw.samples.num_samples == 512 and raw.samples.num_prompts == 20
    assert int(np.asarray(dd.samples.valid()).sum()) < 20 * 512  # duplicates merged into counts
    np.testing.assert_array_equal(dd.samples.draws(), raw.samples.draws())
    betas = np.geomspace(0.02, 50, 24)
    a, b = jl.frontier(raw.samples, betas), jl.frontier(dd.samples, betas)
    for name in ("gain", "kl", "gain_se", "kl_se", "ess_fraction", "kl_ceiling"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9)
    np.testing.assert_array_equal(a.saturated, b.saturated)


def test_dedupe_reports_the_conflicting_groups(raw_and_deduped):
    _, dd = raw_and_deduped
    conflict = [n for n in dd.notes if "carry different values" in n]
    assert conflict and conflict[0].startswith("4 (prompt, response_sha1) groups")


def test_saturation_where_half_the_samples_tie_at_the_maximum(raw_and_deduped):
    raw, _ = raw_and_deduped
    r = np.asarray(raw.samples.rewards)
    tied = (r == r.max(1, keepdims=True)).mean(1)
    heavy = tied > 0.4  # the README: 43-52% share the maximum on some prompts
    assert heavy.any()
    st_ = jl.tilt(raw.samples, np.geomspace(0.01, 100, 30))
    ceiling = np.asarray(st_.kl_ceiling)
    np.testing.assert_allclose(ceiling, -np.log(tied), rtol=1e-12)
    assert (ceiling[heavy] < np.log(2.5)).all()  # far below log N = 6.2
    kl, sat = np.asarray(st_.kl), np.asarray(st_.saturated)
    assert (kl <= ceiling[:, None] + 1e-9).all()
    assert sat[heavy, 0].all()  # at beta -> 0 those prompts sit at their ceiling
    assert (sat[kl > 0.5 * ceiling[:, None]]).all()
    # at beta = 100 nothing is flagged but "few" (one prompt's own interval needs ESS >= 600; these have
    # 512 draws), and the pooled frontier there is trusted
    assert not (np.asarray(st_.reasons)[:, -1] & ~estimators.FEW).any()
    assert int(jl.frontier(raw.samples, [100.0]).reasons[0]) == 0


def test_cli_reads_it(tmp_path):
    path = data_file(FILE)
    out = tmp_path / "f.json"
    res = subprocess.run(
        [sys.executable, "-m", "jaxlimits.cli", "frontier", str(path), "--dedupe", "response_sha1",
         "--num-betas", "8", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert "4 (prompt, response_sha1) groups" in res.stdout
    assert out.exists()
