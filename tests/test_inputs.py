"""Inputs as people save them (issue 13, items 8-13; issue 17, class 8): each read right, or refused in one line."""

import bz2
import gzip
import json
import lzma

import jax.numpy as jnp
import numpy as np
import pytest

import jaxlimits as jl
from jaxlimits import io
from jaxlimits.cli import main

ROWS = [(0, 1.0), (0, 3.0), (1, 2.0), (1, 6.0)]


def _csv_text():
    return "prompt_id,reward\n" + "".join(f"{p},{r}\n" for p, r in ROWS)


def _jsonl_text():
    return "".join(json.dumps({"prompt_id": p, "reward": r}) + "\n" for p, r in ROWS)


def _means(loaded):
    return np.asarray(jnp.sum(loaded.samples.rewards, axis=1) / 2).tolist()


def test_excel_csv_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _csv_text().encode())
    loaded = io.load(path)
    assert loaded.prompt_ids == ["0", "1"] and _means(loaded) == [2.0, 4.0]


def test_a_column_that_still_does_not_match_is_shown_with_repr(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("prompt_id ,reward\n0,1\n")
    with pytest.raises(io.DataError, match=r"no column 'prompt_id'.*the columns are 'prompt_id ', 'reward' "
                                           r"\('prompt_id ' differs from 'prompt_id' only in spaces"):
        io.load(path)
    path.write_text("Prompt_ID,reward\n0,1\n")
    with pytest.raises(io.DataError, match=r"the columns are Prompt_ID, reward \('Prompt_ID' differs from 'prompt_id'"):
        io.load(path)


@pytest.mark.parametrize("suffix, opener", [(".jsonl.gz", gzip.open), (".csv.bz2", bz2.open), (".jsonl.xz", lzma.open),
                                            (".CSV.GZ", gzip.open)])
def test_compressed_files_are_read(tmp_path, suffix, opener):
    path = tmp_path / f"samples{suffix}"
    text = _csv_text() if "csv" in suffix.lower() else _jsonl_text()
    with opener(path, "wt", encoding="utf-8") as f:
        f.write(text)
    loaded = io.load(path)
    assert [str(p) for p in loaded.prompt_ids] == ["0", "1"] and _means(loaded) == [2.0, 4.0]


@pytest.mark.slow
def test_compressed_files_are_read_in_chunks_too(tmp_path):
    path = tmp_path / "samples.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(_jsonl_text())
    out = jl.streaming.sweep_files(path, [1.0], chunk_rows=3)
    ref = jl.frontier(io.load(path).samples, [1.0])
    assert np.allclose(np.asarray(out.frontier.gain), np.asarray(ref.gain))


def test_a_corrupt_compressed_file_is_a_data_error(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(io.DataError, match="broken.jsonl.gz: cannot read"):
        io.load(path)


def test_repeated_column_names_are_refused(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("prompt_id,reward,reward\n0,1,2\n0,3,4\n")
    with pytest.raises(io.DataError, match=r"dup.csv:line 1: the header repeats the column name\(s\) 'reward'"):
        io.load(path)
    path = tmp_path / "dup.jsonl"
    path.write_text('{"prompt_id": 0, "reward": 1}\n{"prompt_id": 0, "reward": 1, "reward": 2}\n')
    with pytest.raises(io.DataError, match="dup.jsonl:line 2: the key 'reward' appears twice"):
        io.load(path)


def test_prompt_ids_written_two_ways_are_refused(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt_id": 0, "reward": 1}\n{"prompt_id": 1, "reward": 2}\n{"prompt_id": "0", "reward": 3}\n')
    with pytest.raises(io.DataError, match=r"mixed.jsonl:line 3: column 'prompt_id' is '0' \(a str\) but line 1 has "
                                           r"0 \(a int\)"):
        io.load(path)
    # 0 and 0.0 are one number: one prompt
    path.write_text('{"prompt_id": 0, "reward": 1}\n{"prompt_id": 0.0, "reward": 3}\n')
    assert io.load(path).prompt_ids == [0]


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, "float8_e4m3fn"])
def test_every_floating_dtype_jax_uses_is_accepted(dtype):
    r = jnp.asarray([[0.0, 1.0, 2.0, 3.0]]).astype(getattr(jnp, dtype) if isinstance(dtype, str) else dtype)
    s = jl.Samples(r, scores=r, log_weights=jnp.zeros_like(r))
    assert s.dtype == jnp.float32 or s.dtype == jnp.float64
    ref = jl.Samples(np.asarray([[0.0, 1.0, 2.0, 3.0]]))
    assert np.allclose(np.asarray(jl.tilt(s, [1.0]).gain), np.asarray(jl.tilt(ref, [1.0]).gain), rtol=1e-6)
    # under jit too: promoted, not computed in the narrow type
    import jax

    assert jax.jit(lambda x: jl.Samples(x).rewards)(r).dtype in (jnp.float32, jnp.float64)


def test_errors_about_one_prompt_name_its_id_and_line(tmp_path, capsys):
    path = tmp_path / "uneven.jsonl"
    rows = [{"prompt_id": 1, "reward": float(i)} for i in range(5)] + [{"prompt_id": 7, "reward": 0.5},
                                                                        {"prompt_id": 7, "reward": 1.5}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["bon", str(path), "--n", "1", "4", "--no-frontier"]) == 2
    err = capsys.readouterr().err
    assert f"exceeds the 2 draws of prompt 7 (first at {path}:line 6)" in err, err
    with pytest.raises(jl.PromptError, match="draws of prompt 1:") as e:  # the library names the row
        jl.best_of_n(io.load(path).samples, [4])
    assert e.value.prompt == 1


# ------------------------------------------------------------------------------------------------
# Issue 17, class 8: no traceback; exit 2 and one line naming the file and line, or the option.


@pytest.mark.parametrize("body, message", [
    ('{"prompt_id": 0, "reward": 1' + "0" * 400 + "}\n", ":line 1: a 401-digit integer"),
    ('{"prompt_id": [1, 2], "reward": 1}\n',
     ":line 1: column 'prompt_id' is [1, 2]; an id must be a string or a number"),
    ('{"prompt_id": {}, "reward": 1}\n', ":line 1: column 'prompt_id' is {}; an id must be a string or a number"),
    ('{"prompt_id": 0, "reward": 1, "h": []}\n', ":line 1: column 'h' is []; an id must be a string or a number"),
    ('{"prompt_id": 1' + "0" * 5000 + ', "reward": 1}\n', ":line 1: a 5001-digit integer"),
])
def test_json_values_no_float_or_id_can_hold_exit_2(tmp_path, capsys, body, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(body)
    assert main(["info", str(path), "--dedupe", "h"] if '"h"' in body else ["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}{message}" in err and err.count("\n") == 1, err


def test_a_csv_field_over_131072_characters_is_read(tmp_path):
    path = tmp_path / "long.csv"
    text = "x" * 200_000
    path.write_text(f"prompt_id,reward,response\n0,1.5,{text}\n0,2.5,{text}\n")
    loaded = io.load(path)
    assert _means(loaded) == [2.0]
    import csv

    assert csv.field_size_limit() == 131072  # the process-wide limit is left as it was


def test_a_malformed_csv_is_one_line_naming_the_line(tmp_path, capsys):
    path = tmp_path / "nul.csv"
    path.write_text('prompt_id,reward\n0,1\n0,"2\n')
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:line" in err and "not valid CSV" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("option", ["--out", "--plot"])
def test_an_output_path_that_is_a_directory_is_refused_before_computing(tmp_path, capsys, option):
    path = tmp_path / "s.csv"
    path.write_text(_csv_text())
    folder = tmp_path / ("d.json" if option == "--out" else "d.png")
    folder.mkdir()
    assert main(["frontier", str(path), "--betas", "1", option, str(folder), "--force"]) == 2
    captured = capsys.readouterr()
    assert f"{option} {folder}: is a directory" in captured.err and captured.out == ""


def test_an_error_about_one_sample_names_its_line(tmp_path, capsys):
    path = tmp_path / "lp.csv"
    rows = [(3, 0.5, -1.0), (3, 1.5, -2.0), (9, 0.1, -1.0), (9, 0.2, 0.5)]  # a log-probability > 0, line 5
    path.write_text("prompt_id,reward,logprob\n" + "".join(f"{p},{r},{lp}\n" for p, r, lp in rows))
    assert main(["bon", str(path), "--n", "1", "2", "--log-prob-col", "logprob", "--no-frontier"]) == 2
    err = capsys.readouterr().err
    assert f"prompt '9' ({path}:line 5)" in err and "is not a log-probability" in err, err


# ------------------------------------------------------------------------------------------------
# A bounded fuzz campaign over the readers (issue 17, class 8): any cell value, any bytes -> the
# samples, or a DataError; never another exception. Derandomized: the same examples every run.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=4,
)
_FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(cells=st.lists(st.tuples(_JSON, _JSON, _JSON), min_size=1, max_size=4))
def test_fuzz_jsonl_cells_load_or_raise_a_data_error(tmp_path, cells):
    path = tmp_path / "fuzz.jsonl"
    lines = []
    for pid, reward, key in cells:
        try:
            lines.append(json.dumps({"prompt_id": pid, "reward": reward, "h": key}))
        except ValueError:  # an integer past Python's str limit: not writable as JSON either
            lines.append('{"prompt_id": 0, "reward": 1' + "0" * 5000 + "}")
    path.write_text("\n".join(lines) + "\n")
    for dedupe in (None, "h"):
        try:
            loaded = io.load(path, dedupe=dedupe)
        except io.DataError as e:
            assert str(e).startswith(str(path)) and "\n" not in str(e)
        else:
            assert np.all(np.isfinite(np.asarray(loaded.samples.rewards)))


@_FUZZ
@given(data=st.binary(max_size=80), suffix=st.sampled_from([".csv", ".jsonl", ".csv.gz"]))
def test_fuzz_bytes_load_or_raise_a_data_error(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(b"prompt_id,reward\n" + data if suffix == ".csv" else data)
    try:
        io.load(path)
    except io.DataError as e:
        assert str(e).startswith(str(path))
