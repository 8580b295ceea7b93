"""Loaders: every format gives the same samples; every malformed input names file, line and column."""

import json

import numpy as np
import pytest

import jaxlimits as jl
from jaxlimits import io

R = np.array([[0.5, -1.25, 2.0, 0.75], [1.5, 1.5, -0.5, 3.0], [0.0, 1.0, 2.0, 4.0]])


def write_long_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    long_rows = [{"prompt_id": f"q{p}", "reward": R[p, i], "gold": 2 * R[p, i]}
                 for p in range(3) for i in range(4)]
    out = {"jsonl": write_long_jsonl(tmp_path / "long.jsonl", long_rows)}
    csv = tmp_path / "long.csv"
    body = "".join(f"{r['prompt_id']},{r['reward']},{r['gold']}\n" for r in long_rows)
    csv.write_text("prompt_id,reward,gold\n" + body)
    out["csv"] = csv
    out["wide_jsonl"] = write_long_jsonl(
        tmp_path / "wide.jsonl",
        [{"prompt_id": f"q{p}", "reward": list(R[p]), "gold": list(2 * R[p])} for p in range(3)],
    )
    ids = np.repeat([f"q{p}" for p in range(3)], 4)
    np.savez(tmp_path / "long.npz", prompt_id=ids, reward=R.ravel(), gold=2 * R.ravel())
    out["npz"] = tmp_path / "long.npz"
    np.savez(tmp_path / "wide.npz", reward=R, gold=2 * R)
    out["wide_npz"] = tmp_path / "wide.npz"
    pq.write_table(pa.table({k: [r[k] for r in long_rows] for k in long_rows[0]}), tmp_path / "long.parquet")
    out["parquet"] = tmp_path / "long.parquet"
    pq.write_table(pa.table({"prompt_id": [f"q{p}" for p in range(3)], "reward": [list(x) for x in R],
                             "gold": [list(2 * x) for x in R]}), tmp_path / "wide.parquet")
    out["wide_parquet"] = tmp_path / "wide.parquet"
    return out


def test_every_format_gives_the_same_frontier(files):
    betas = np.array([4.0, 1.0, 0.25])
    ref = jl.frontier(jl.Samples(R, scores=2 * R), betas)
    for name, path in files.items():
        loaded = io.load(path, score="gold")
        np.testing.assert_array_equal(np.asarray(loaded.samples.rewards), R, err_msg=name)
        f = jl.frontier(loaded.samples, betas)
        np.testing.assert_allclose(f.gain, ref.gain, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(f.kl, ref.kl, rtol=1e-12, err_msg=name)
        assert loaded.source["prompts"] == 3


def test_ragged_long_table_and_prompt_order(tmp_path):
    rows = [{"prompt_id": 7, "reward": 1.0}, {"prompt_id": 3, "reward": 2.0}, {"prompt_id": 7, "reward": 0.0}]
    loaded = io.load(write_long_jsonl(tmp_path / "r.jsonl", rows))
    assert loaded.prompt_ids == [7, 3]
    np.testing.assert_array_equal(loaded.samples.mask, [[True, True], [True, False]])


def test_dedupe_merges_counts_and_keeps_conflicts(tmp_path):
    rows = [
        {"prompt_id": 0, "reward": 1.0, "h": "a"}, {"prompt_id": 0, "reward": 1.0, "h": "a"},
        {"prompt_id": 0, "reward": 2.0, "h": "b"}, {"prompt_id": 0, "reward": 2.5, "h": "b"},
    ]
    path = write_long_jsonl(tmp_path / "d.jsonl", rows)
    raw, dd = io.load(path), io.load(path, dedupe="h")
    assert int(np.asarray(dd.samples.valid()).sum()) == 3
    np.testing.assert_array_equal(dd.samples.draws(), [4])
    assert any("1 (prompt, h) groups carry different values" in n for n in dd.notes)
    a, b = jl.tilt(raw.samples, [0.5, 2.0]), jl.tilt(dd.samples, [0.5, 2.0])
    for name in ("gain", "kl", "gain_se", "ess"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12)


def test_sampler_log_probabilities_become_log_weights(tmp_path):
    rows = [{"prompt_id": 0, "reward": float(i), "lp0": -1.0 * i, "lpq": -0.5 * i} for i in range(4)]
    loaded = io.load(write_long_jsonl(tmp_path / "w.jsonl", rows), base_logprob="lp0", sampler_logprob="lpq")
    np.testing.assert_allclose(loaded.samples.log_weights, [[0.0, -0.5, -1.0, -1.5]])
    with pytest.raises(io.DataError, match="needs both"):
        io.load(tmp_path / "w.jsonl", base_logprob="lp0")


@pytest.mark.parametrize(
    "content, kwargs, message",
    [
        ('{"prompt_id": 0, "reward": 1.0}\n{"prompt_id": 0, "reward": "high"}\n', {},
         r"bad\.jsonl:line 2: column 'reward' has a non-numeric value 'high'"),
        ('{"prompt_id": 0, "reward": 1.0}\n{"prompt_id": 0, "reward": NaN}\n', {},
         r"line 2: column 'reward' is nan, not a finite number"),
        ('{"prompt_id": 0, "reward": 1.0}\n{"prompt_id": 0}\n', {},
         r"line 2: column 'reward' has no value \(the key is missing or null\)"),
        ('{"prompt_id": 0, "score": 1.0}\n', {},
         r"no column 'reward' \(set it with --reward-col\); the columns are prompt_id, score"),
        ('{"prompt_id": 0, "reward": 1.0}\n{"prompt_id": 0, "reward": 1.0\n', {}, r"line 2: not valid JSON"),
        ('[1, 2]\n', {}, r"line 1: expected a JSON object"),
        ('{"prompt_id": "", "reward": 1.0}\n', {}, r"line 1: column 'prompt_id' is empty"),
        ('{"prompt_id": 0, "reward": 1.0, "n": -2}\n', {"count": "n"},
         r"line 1: column 'n' is -2.0, not a whole number >= 0"),
        ('{"prompt_id": 0, "reward": 1.0, "n": 0}\n', {"count": "n"}, r"prompt 0 has no sample with a positive count"),
        ('{"prompt_id": 0, "reward": [1.0, 2.0], "gold": [1.0]}\n', {"score": "gold"},
         r"line 1: the lists of a prompt differ in length"),
        ('{"prompt_id": 0, "reward": []}\n', {}, r"line 1: prompt 0 has an empty list"),
        ('\n\n', {}, r"no rows"),
    ],
)
def test_malformed_jsonl_is_named(tmp_path, content, kwargs, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(io.DataError, match=message):
        io.load(path, **kwargs)


def test_malformed_csv_and_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt_id,reward\n0,1.0\n0,1.0,7\n")
    with pytest.raises(io.DataError, match=r"bad\.csv:line 3: 3 fields, the header has 2"):
        io.load(bad)
    bad.write_text("prompt_id,reward\n0,1.0\n1,\n")
    with pytest.raises(io.DataError, match=r"line 3: column 'reward' has a non-numeric value ''"):
        io.load(bad)
    with pytest.raises(io.DataError, match="no such file"):
        io.load(tmp_path / "missing.jsonl")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(io.DataError, match="unknown format"):
        io.load(tmp_path / "x.txt")
    with pytest.raises(io.DataError, match="is a directory"):
        io.read_table(tmp_path)
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(io.DataError, match="not a text file"):
        io.load(binary)
    broken = tmp_path / "b.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(io.DataError, match="not a readable .npz"):
        io.load(broken)


def test_loader_does_not_modify_the_file(tmp_path):
    path = write_long_jsonl(tmp_path / "a.jsonl", [{"prompt_id": 0, "reward": 1.0, "h": "x"}] * 3)
    before = path.read_bytes()
    io.load(path, dedupe="h")
    assert path.read_bytes() == before


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_stream_without_pyarrow(tmp_path, monkeypatch, capsys, suffix):
    """pyarrow is optional: without it ``--stream`` reads line by line and gives the same figures
    (it crashed importing pyarrow to join chunks, found by a fresh install)."""
    import sys

    from jaxlimits import cli

    rng = np.random.default_rng(3)
    path = tmp_path / f"s{suffix}"
    rows = enumerate(rng.standard_normal(400))
    if suffix == ".jsonl":
        path.write_text("".join(f'{{"prompt_id": "q{i // 40}", "reward": {x:.6f}}}\n' for i, x in rows))
    else:
        path.write_text("prompt_id,reward\n" + "".join(f"q{i // 40},{x:.6f}\n" for i, x in rows))
    args = [str(path), "--stream", "--chunk-rows", "150"]
    assert cli.main(["info", *args]) == 0
    with_arrow = capsys.readouterr().out
    for name in ("pyarrow", "pyarrow.csv", "pyarrow.json", "pyarrow.compute", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, name, None)  # `import pyarrow` now raises ImportError
    assert cli.main(["info", *args]) == 0
    assert capsys.readouterr().out == with_arrow
    assert cli.main(["frontier", *args, "--betas", "2", "1"]) == 0
    assert "beta" in capsys.readouterr().out


def test_loaded_is_short_and_named_when_passed_as_samples(tmp_path):
    """``io.load`` returns a ``Loaded``; its repr is one line, and passing it where Samples are
    expected says to take ``.samples`` (a fresh user tried ``jl.frontier(io.load(path))``)."""
    path = tmp_path / "s.csv"
    path.write_text("prompt_id,reward\n" + "".join(f"q{i // 10},{np.sin(i)}\n" for i in range(100)))
    loaded = io.load(path)
    assert repr(loaded).startswith("Loaded(10 prompts x 10 samples") and "\n" not in repr(loaded)
    for fn in (jl.frontier, jl.tilt, lambda s: jl.min_kl_for_gain(s, 0.1)):
        with pytest.raises(TypeError, match=r"got Loaded \(jaxlimits.io.load returns a Loaded: pass its .samples\)"):
            fn(loaded) if fn is not jl.tilt else fn(loaded, [1.0])
