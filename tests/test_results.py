"""Results people can hold: short reprs, HTML reprs, one table form, readable statuses; one vocabulary."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlimits as jl
from jaxlimits import io, tables
from jaxlimits.estimators import reason_names

# two prompts of three responses each, with a gold score: every result type can be built from it
LAW = jl.Samples.from_law([[0.0, 1.0, 2.0], [0.0, 0.5, 3.0]], [[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]],
                          scores=[[0.0, 1.0, -1.0], [1.0, 2.0, 0.0]])
BETAS = [2.0, 1.0]


@pytest.fixture(scope="module")
def results():
    draws = jl.Samples(np.random.default_rng(0).standard_normal((2, 40)))
    return {
        "TiltStats": jl.tilt(LAW, BETAS),
        "Frontier": jl.frontier(LAW, BETAS, per_prompt=False),
        "Bands": jl.frontier(draws, BETAS, per_prompt=False, bootstrap=4).bands,
        "Solution": jl.max_gain_at_kl(LAW, [0.1, 100.0], throw=False),
        "BestOfN": jl.best_of_n(LAW, [1, 2]),
        "SoftBestOfN": jl.soft_best_of_n(draws, [1, 2], lam=1.0),
        "ProxyGap": jl.proxy_gap(LAW, BETAS),
        "Overoptimization": jl.overoptimization(LAW, [2.0, 1.0, 0.5], same_kl=True),
        "Peak": jl.overoptimization(LAW, [2.0, 1.0, 0.5]).peak,
        "Comparison": jl.compare(LAW, [jl.Run("a", 0.1, 0.2), jl.Run("b", 50.0, 0.1)]),
    }


KINDS = ["TiltStats", "Frontier", "Bands", "Solution", "BestOfN", "SoftBestOfN", "ProxyGap", "Overoptimization",
         "Peak", "Comparison"]


@pytest.mark.parametrize("kind", KINDS)
def test_repr_is_short_and_names_the_kind(results, kind):
    res = results[kind]
    text = repr(res)
    assert text.startswith(kind), text
    assert "\n" not in text and len(text) < 400, text
    assert "Array(" not in text and "array(" not in text


@pytest.mark.parametrize("kind", KINDS)
def test_table_forms_agree(results, kind):
    res = results[kind]
    cols = res.to_dict()
    n = {len(v) for v in cols.values()}
    assert len(n) == 1, {k: len(v) for k, v in cols.items()}
    if kind != "Comparison":  # Comparison.rows() is the CLI's JSON-ready table (tested in test_compare.py)
        rows = res.rows()
        assert len(rows) == n.pop() and list(rows[0]) == list(cols)
        json.dumps(rows[0], allow_nan=True)  # plain Python values
    html = res._repr_html_()
    assert html.startswith("<div>") and "<table>" in html and kind in html


def test_frontier_table_is_the_fields_with_reasons_spelled(results):
    f = results["Frontier"]
    cols = f.to_dict()
    for name in ("betas", "gain", "kl", "gain_se", "kl_ceiling", "gain_bias", "kl_bias", "reasons", "khat"):
        np.testing.assert_array_equal(cols[name], np.broadcast_to(np.asarray(getattr(f, name)), (2,)))
    assert list(cols["reason_names"]) == [reason_names(c) for c in np.asarray(f.reasons)]
    assert "prompts" not in cols and "bands" not in cols  # nested results are their own tables
    text = repr(f)
    assert "KL " in text and ("trusted" in text) and ("flagged" in text)


def test_frontier_repr_counts_flagged_points_by_reason():
    r = np.random.default_rng(1).standard_normal((2, 8))  # 8 draws a prompt: every point 'few'
    f = jl.frontier(jl.Samples(r), BETAS, per_prompt=False)
    assert np.all(np.asarray(f.reasons) & jl.estimators.FEW)
    codes = np.asarray(f.reasons)
    assert "2 of 2 flagged (" in repr(f)
    for code in np.unique(codes):
        assert f"{int(np.sum(codes == code))} {reason_names(code)}" in repr(f)
    assert "no trusted point" in repr(f)


def test_per_prompt_table_has_an_index_per_axis(results):
    t = results["TiltStats"]
    cols = t.to_dict()
    assert list(cols)[:2] == ["prompt", "beta_index"]
    np.testing.assert_array_equal(cols["prompt"], [0, 0, 1, 1])
    np.testing.assert_array_equal(cols["beta_index"], [0, 1, 0, 1])
    np.testing.assert_array_equal(cols["kl"], np.asarray(t.kl).ravel())
    np.testing.assert_array_equal(cols["draws"], np.repeat(np.asarray(t.draws), 2))  # [prompts] repeated


def test_solution_statuses_read_as_names(results):
    sol = results["Solution"]
    assert list(sol.status_names()) == ["OK", "KL_AT_OR_ABOVE_CEILING"]
    assert sol.messages()[0] == "solved" and "K_max" in sol.messages()[1]
    assert [r["status_name"] for r in sol.rows()] == ["OK", "KL_AT_OR_ABOVE_CEILING"]
    assert "1 KL_AT_OR_ABOVE_CEILING" in repr(sol) and "1 OK" in repr(sol)
    per = jl.max_gain_at_kl(LAW, [0.1], pooled=False)
    assert per.status_names().shape == (2, 1) and list(per.to_dict())[:2] == ["prompt", "target"]


def test_peak_and_overoptimization_tables(results):
    peak = results["Peak"]
    (row,) = peak.rows()
    assert row["status_name"] == jl.proxy.PEAK_NAMES[int(peak.status)]
    over = results["Overoptimization"]
    cols = over.to_dict()
    assert {"gap", "gold_frontier", "shortfall", "frontier_status_name"} <= set(cols)
    assert repr(over).startswith("Overoptimization[3](peak: Peak(")


def test_results_stay_pytrees_and_jit(results):
    f = results["Frontier"]
    assert f._fields[:3] == ("betas", "gain", "kl") and f._fields[-8:] == (
        "gain_bias", "kl_bias", "reasons", "khat", "gain_lo", "gain_hi", "kl_lo", "kl_hi")
    leaves = jax.tree.leaves(f)
    assert len(leaves) == len(jax.tree.leaves(jax.tree.map(lambda x: x, f)))
    seen = []

    @jax.jit
    def twice(s):
        seen.append(repr(s))  # traced: the repr falls back to the fields' shapes, never raises
        return jax.tree.map(lambda x: 2 * x, s)

    out = twice(results["SoftBestOfN"])
    assert isinstance(out, jl.SoftBestOfN) and seen[0].startswith("SoftBestOfN(")


def test_to_pandas_or_a_clear_error(results):
    f = results["Frontier"]
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            f.to_pandas()
    else:
        df = f.to_pandas()
        assert list(df.columns) == list(f.to_dict()) and len(df) == 2


def test_tables_over_other_axes_leave_out_fields_of_the_same_length_by_chance():
    rng = np.random.default_rng(0)
    gold = rng.standard_normal((4, 30))
    ens = jl.Ensemble(gold[..., None] + rng.standard_normal((4, 30, 2)), gold)
    sc = jl.ensemble_scaling(ens, [2.0, 1.0], subsets=2, bootstrap=4)  # K = 1, 2 and two betas
    assert repr(sc).startswith("EnsembleScaling[2](K 1..2; 2 betas")
    cols = sc.to_dict()
    assert "betas" not in cols and "gap_rate" not in cols and cols["residual_norm"].shape == (2,)
    spot = jl.bt_blind_spot(jl.Samples(gold, scores=gold + 0.1), [0.0, 1.0], [1.0, 2.0])  # two shifts, two betas
    assert repr(spot).startswith("BlindSpot[2](shift 0..1")
    assert "betas" not in spot.to_dict() and len(spot.rows()) == 2


def test_flagged_and_span_words():
    assert tables.flagged(np.array([0, 0])) == "none flagged"
    assert tables.flagged(np.array([0, 8, 8, 3])) == "3 of 4 flagged (1 bias+tail, 2 ceiling)"
    assert tables.span([np.nan, 1.0, 3.0]) == "1..3" and tables.span([np.nan]) == "none finite"


# -- One vocabulary: the CLI's option names are keywords of the loader.


def test_load_takes_the_cli_names(tmp_path):
    path = tmp_path / "s.jsonl"
    lines = (json.dumps({"pid": p, "rm": float(x), "gold": 1.0}) for p in "ab" for x in (0, 1, 2))
    path.write_text("".join(line + "\n" for line in lines))
    short = io.load(path, prompt="pid", reward="rm", score="gold").samples
    cli = io.load(path, prompt_col="pid", reward_col="rm", score_col="gold").samples
    np.testing.assert_array_equal(short.rewards, cli.rewards)
    np.testing.assert_array_equal(short.scores, cli.scores)
    with pytest.raises(TypeError, match="given twice"):
        io.load(path, reward="rm", reward_col="rm")
    with pytest.raises(TypeError, match="unknown column keyword 'rewards'"):
        io.load(path, rewards="rm")


# -- The compilation cache, one call for library users (a fresh process: JAX's config is global).


def test_enable_compilation_cache(tmp_path):
    import os
    import subprocess
    import sys

    code = ("import jax, jaxlimits as jl, sys; a = jl.enable_compilation_cache(sys.argv[1]); "
            "print(a == sys.argv[1], jax.config.jax_compilation_cache_dir == sys.argv[1])")
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    folder = tmp_path / "new" / "xla"
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["True", "True"], out.stderr
    assert folder.is_dir()
    off = ("import jaxlimits as jl; print(jl.enable_compilation_cache())")
    out = subprocess.run([sys.executable, "-c", off], capture_output=True, text=True,
                         env={**env, "JAXLIMITS_CACHE_DIR": ""})
    assert out.stdout.split() == ["None"], out.stderr


# -- Try-it-now: the examples' files, notebooks free of machine paths.


def test_write_examples_writes_what_the_examples_name(tmp_path):
    from jaxlimits import datasets
    from jaxlimits.cli import COMMANDS

    paths = datasets.write_examples(tmp_path, num_prompts=3, num_samples=40)
    assert [p.name for p in paths] == list(datasets.EXAMPLE_FILES) and all(p.stat().st_size for p in paths)
    named = set()
    for name in COMMANDS:
        module = __import__(f"jaxlimits.cli.{name}", fromlist=["EXAMPLES"])
        for example in module.EXAMPLES:
            named |= {w for w in example.split() if w.endswith((".jsonl", ".gz", ".csv", ".json")) and "--out" not in w}
    outputs = {"frontier.csv", "bon.csv", "budgets.csv", "summary.json", "proxy.json", "demo_frontier.json"}
    assert named - outputs <= set(datasets.EXAMPLE_FILES)
    loaded = io.load(tmp_path / "samples.jsonl", reward_col="reward", score_col="gold", dedupe="response_sha1")
    assert loaded.samples.num_prompts == 3
    np.testing.assert_array_equal(io.load(tmp_path / "base.jsonl", reward="rm_logit").samples.rewards,
                                  io.load(tmp_path / "samples.jsonl").samples.rewards)
    with pytest.raises(FileExistsError, match="samples.jsonl exists"):
        datasets.write_examples(tmp_path, num_prompts=3, num_samples=40)


def test_demo_write_data_refuses_to_overwrite(tmp_path, capsys):
    from jaxlimits import cli

    (tmp_path / "runs.csv").write_text("mine\n")
    assert cli.main(["demo", "--write-data", str(tmp_path)]) == 2
    assert "runs.csv exists; pass --force" in capsys.readouterr().err
    assert (tmp_path / "runs.csv").read_text() == "mine\n" and not (tmp_path / "samples.jsonl").exists()


def test_notebook_outputs_hold_no_machine_paths():
    from pathlib import Path

    for book in sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb")):
        cells = json.loads(book.read_text())["cells"]
        text = json.dumps([c.get("outputs", []) for c in cells])
        for marker in ("/work/", "/tmp/", "/root/", "/home/", "/Users/"):
            assert marker not in text, f"{book.name}: a stored output shows a machine path ({marker})"


# -- Loading: the vectorised reader gives the line-by-line reader's table, or steps aside.


def _both_readers(path, monkeypatch, **columns):
    monkeypatch.setattr(io, "ARROW_MIN_BYTES", 0)
    fast = io.read_table(path)
    monkeypatch.setattr(io, "ARROW_MIN_BYTES", float("inf"))
    slow = io.read_table(path)
    return fast, slow


@pytest.mark.parametrize("text", [
    '{"p": 0, "r": 1.5, "s": "a"}\n{"p": 1, "r": 2, "s": "b"}\n',   # ints and floats in one column
    '{"p": "x", "r": 1e3, "s": "2024-01-01"}\n{"p": "y", "r": -0.25, "s": "z"}',  # no final newline
])
def test_vectorised_jsonl_reader_matches_the_line_reader(tmp_path, monkeypatch, text):
    pytest.importorskip("pyarrow")
    path = tmp_path / "s.jsonl"
    path.write_text(text)
    fast, slow = _both_readers(path, monkeypatch)
    assert list(fast.columns) == list(slow.columns)
    np.testing.assert_array_equal(fast.lines, slow.lines)
    assert fast.keys("p") == slow.keys("p")
    np.testing.assert_array_equal(fast.column("r"), slow.column("r"))  # the same numbers (2 may read as 2.0)
    assert list(fast.columns["s"]) == list(slow.columns["s"])


@pytest.mark.parametrize("text, message", [
    # a blank line: the line numbers must stay the file's
    ('{"p": 0, "r": 1}\n\n{"p": 0, "r": 2}\n{"p": 0, "r": null}\n',
     ":line 4: column 'r' has no value (the key is missing or null)"),
    ('{"p": 0, "r": 1}\n{"p": 0, "r": 1, "r": 2}\n', ":line 2: the key 'r' appears twice"),
    ('{"p": 0, "r": 1}\n{"p": 0}\n', ":line 2: column 'r' has no value (the key is missing or null)"),
    ('{"p": 0, "r": 1}\n{"p": "0", "r": 2}\n', ":line 2: column 'p' is '0' (a str)"),
])
def test_vectorised_jsonl_reader_leaves_what_it_cannot_read_exactly(tmp_path, monkeypatch, text, message):
    path = tmp_path / "s.jsonl"
    path.write_text(text)
    monkeypatch.setattr(io, "ARROW_MIN_BYTES", 0)
    with pytest.raises(io.DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        io.load(path, prompt="p", reward="r")


def test_csv_numbers_in_one_pass_match_cell_by_cell(tmp_path):
    rng = np.random.default_rng(0)
    r = rng.standard_normal(2000)
    cells = [f"{x:.6g}" if i % 3 else f" {float(x)!r} " for i, x in enumerate(r)]  # spaces are allowed, as float() does
    path = tmp_path / "s.csv"
    path.write_text("p,r\n" + "".join(f"{i % 7},{c}\n" for i, c in enumerate(cells)))
    t = io.read_table(path)
    np.testing.assert_array_equal(t.column("r"), [float(c) for c in cells])
    assert t.keys("p")[:3] == ["0", "1", "2"]  # CSV ids stay text
    path.write_text("p,r\n" + "".join(f"0,{c}\n" for c in cells[:1500]) + "0,abc\n" + "0,1\n" * 10)
    with pytest.raises(io.DataError, match=r":line 1502: column 'r' has a non-numeric value 'abc'"):
        io.read_table(path).column("r")


# -- frontier --stream: the out-of-core sweep from the command line.


def test_frontier_stream_matches_the_in_memory_table(tmp_path, capsys):
    from jaxlimits import cli

    rng = np.random.default_rng(0)
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"prompt_id": p, "reward": float(x)}) + "\n"
                            for p in range(5) for x in np.round(rng.standard_normal(60), 3)))
    outs = [tmp_path / "stream.json", tmp_path / "memory.json"]
    grid = ["--betas", "2", "1", "0.5"]
    stream_args = ["--stream", "--chunk-rows", "70", "--out", str(outs[0])]
    assert cli.main(["frontier", str(path), *grid, "--x64", *stream_args]) == 0
    printed = capsys.readouterr().out
    assert "5 prompts, 300 rows read in chunks of 70" in printed
    assert "'tail' and 'no-tilt' are never raised here" in printed  # the legend lists reasons it cannot raise
    assert cli.main(["frontier", str(path), *grid, "--x64", "--out", str(outs[1])]) == 0
    stream, memory = (json.loads(p.read_text())["rows"] for p in outs)
    # the chunked sweep keeps mergeable sums only: no k-hat ('tail', 'no-tilt') and no tail model, so its
    # rule is the one for unmodelled tails, what the library gives from the sums alone
    import importlib

    from jaxlimits import _sweep, estimators
    fr = importlib.import_module("jaxlimits.frontier")  # (jaxlimits.frontier is also the function)
    smp = io.load(path).samples
    lam = _sweep.as_lambda(np.array([2.0, 1.0, 0.5]), smp.num_prompts, smp.dtype)
    plan = _sweep.kernel_plan(smp.num_prompts, smp.num_samples, 3, 8, None, counts=False)
    sums_only = fr.from_pool(fr.pool_of(estimators._tilt(smp, lam, plan, largest=False), jnp.ones(5)), lam[0])
    want = [estimators.reason_names(int(c) & ~(estimators.TAIL | estimators.NO_TILT)) for c in sums_only.reasons]
    assert [r["reasons"] for r in stream] == want and "few" in "".join(want)
    assert all(r["kl_hi"] == pytest.approx(r["kl"] + 1.959963984540054 * r["kl_se"]) for r in stream)
    for a, b in zip(stream, memory):
        for k in ("kl", "gain", "kl_se", "gain_se", "ess_fraction"):
            assert a[k] == pytest.approx(b[k], rel=1e-10), k
    capsys.readouterr()
    assert cli.main(["frontier", str(path), "--stream", "--dedupe", "reward"]) == 2
    assert "--dedupe is not available with --stream" in capsys.readouterr().err
