"""``jaxlimits invert`` without a tail model: a KL budget past what the samples show is unknown, printed with
the bound the samples give (at least their cap, as ``compare`` prints it), in the table and --out."""

import csv

import numpy as np

import jaxlimits as jl
from jaxlimits.cli import main


def test_a_budget_past_the_ceiling_prints_the_samples_cap_as_a_bound(tmp_path, capsys):
    r = np.random.default_rng(0).standard_normal((20, 64))  # 64 draws show at most log 64 = 4.2 nats
    path = tmp_path / "s.jsonl"
    path.write_text("".join(f'{{"prompt_id": {p}, "reward": {float(v)!r}}}\n' for p in range(20) for v in r[p]))
    out = tmp_path / "inv.csv"
    assert main(["invert", str(path), "--x64", "--kl", "0.1", "10", "--gain", "99", "--out", str(out)]) == 2
    text = capsys.readouterr()
    cap = float(np.mean(r.max(axis=1) - r.mean(axis=1)))
    cmp = jl.compare(jl.Samples(r), [jl.Run("far", 10.0, 1.0)])
    assert abs(float(cmp.frontier_gain_lower_bound[0]) - cap) < 1e-9  # the same bound as compare's
    with out.open() as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    kl10 = next(x for x in rows if x["question"] == "max_gain_at_kl" and float(x["target"]) == 10)
    kl01 = next(x for x in rows if x["question"] == "max_gain_at_kl" and float(x["target"]) == 0.1)
    g99 = next(x for x in rows if x["question"] == "min_kl_for_gain")
    assert kl10["solver_status"] == "KL_AT_OR_ABOVE_CEILING" and kl10["gain"] == ""
    assert abs(float(kl10["gain_lower_bound"]) - cap) < 1e-9
    # solved: no bound; a gain past the cap: no bound is known
    assert kl01["gain_lower_bound"] == "" and kl01["gain"] != ""
    assert g99["solver_status"] == "GAIN_AT_OR_ABOVE_MAX" and g99["gain_lower_bound"] == ""
    line = next(x for x in text.out.splitlines() if x.strip().startswith("KL 10 "))
    assert f"≥ {cap:.4g}" in line and "unknown" in line
    assert f"at least the samples' cap {cap:.5g}" in text.err
