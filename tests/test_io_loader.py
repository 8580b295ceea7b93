"""Loading at the speed of the data (issue 15, item 4): the pyarrow readers give the line-by-line
readers' tables and errors, grouping by prompt is array indexing, and ``info --stream`` gives
the in-memory figures chunk by chunk."""

import json

import numpy as np
import pytest

from jaxlimits import cli, io, streaming
from jaxlimits.cli import info

pytest.importorskip("pyarrow")


def _readers(monkeypatch, path, **columns):
    """The samples loaded by the vectorised readers and by the line-by-line ones."""
    monkeypatch.setattr(io, "ARROW_MIN_BYTES", 0)
    fast = io.load(path, **columns)
    monkeypatch.setattr(io, "ARROW_MIN_BYTES", float("inf"))
    slow = io.load(path, **columns)
    return fast, slow


def _same(fast, slow):
    assert fast.prompt_ids == slow.prompt_ids
    for name in ("rewards", "scores", "log_weights", "counts", "mask"):
        a, b = getattr(fast.samples, name), getattr(slow.samples, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    assert len(fast.lines) == len(slow.lines)
    for a, b in zip(fast.lines, slow.lines):
        np.testing.assert_array_equal(a, b)


# -- CSV by pyarrow: ids stay text, line numbers stay the file's, odd files go line by line.


@pytest.mark.parametrize("text", [
    "prompt_id,reward,gold,extra\n007,1.5,2,x\n7,2.5,-1e3,y\n007, 3.25 ,4,z\n",  # '007' and '7' are two prompts
    '\ufeffprompt_id,reward,gold\n"a,b",1,2\n"c ""q""",2,3\na,b,4\n'.replace("a,b,4", '"a,b",0.5,4'),  # quotes
    "prompt_id,reward,gold\r\nq1,1,2\r\nq2,3,4\r\nq1,5,6\r\n",  # CRLF; rows of a prompt apart
    "prompt_id,reward,gold\nq1,1,2\n\nq2,3,4\n",  # a blank line: skipped, the lines after it keep their numbers
    "prompt_id,reward,gold\nq1,1,2\n,,\nq2,3,4\nq2,3,4",  # a row of empty cells is skipped; no final newline
    'prompt_id,reward,gold\n"q\n1",1,2\nq2,3,4\n',  # a quoted newline: one row over two lines
])
def test_csv_by_pyarrow_matches_the_line_reader(tmp_path, monkeypatch, text):
    path = tmp_path / "s.csv"
    path.write_bytes(text.encode())
    fast, slow = _readers(monkeypatch, path, score="gold")
    _same(fast, slow)
    assert all(isinstance(p, str) for p in fast.prompt_ids)
    monkeypatch.setattr(io, "ARROW_MIN_BYTES", 0)
    t = io.read_table(path)  # every column, as text, as the line reader has them
    assert list(t.columns) == [h.lstrip("\ufeff") for h in text.splitlines()[0].split(",")]


def test_csv_ids_stay_text_and_are_read_by_pyarrow(tmp_path, monkeypatch):
    path = tmp_path / "s.csv"
    path.write_text("p,r\n" + "".join(f"{i % 3:03d},{i}\n" for i in range(9)))
    monkeypatch.setattr(io, "ARROW_MIN_BYTES", 0)
    t = io.read_table(path, columns=["p", "r"], numeric=["r"])
    assert type(t.columns.raw("p")).__module__.startswith("pyarrow")  # not one Python str per row
    assert t.columns.raw("r").dtype == np.float64
    assert io.load(path, prompt="p", reward="r").prompt_ids == ["000", "001", "002"]


@pytest.mark.parametrize("text, message", [
    ("p,r\n0,1.0\n0,1.0,7\n", ":line 3: 3 fields, the header has 2"),
    ("p,r\n0,1.0\n1,\n", ":line 3: column 'r' has a non-numeric value ''"),
    ("p,r\n0,1.0\n\n1,abc\n", ":line 4: column 'r' has a non-numeric value 'abc'"),
    ("p,r\n0,1.0\n1,inf\n", ":line 3: column 'r' is 'inf', not a finite number"),
    ("p,r\n0,1.0\n ,2\n", ":line 3: column 'p' is empty"),
    ("p,r,r\n0,1,2\n", ":line 1: the header repeats the column name(s) 'r'"),
    ('p,r\n0,1\n0,"2\n', "not valid CSV"),
    ("p,x\n0,1\n", "no column 'r' (set it with --reward-col); the columns are p, x"),
])
def test_csv_errors_by_pyarrow_name_the_line(tmp_path, monkeypatch, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    monkeypatch.setattr(io, "ARROW_MIN_BYTES", 0)
    with pytest.raises(io.DataError) as e:
        io.load(path, prompt="p", reward="r")
    assert str(e.value).startswith(str(path)) and message in str(e.value), str(e.value)


def test_jsonl_blocks_keep_only_the_needed_columns(tmp_path, monkeypatch):
    path = tmp_path / "s.jsonl"
    rows = [{"prompt_id": f"q{i % 4}", "reward": i * 0.5, "text": [1, 2] if i % 2 else None} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fast, slow = _readers(monkeypatch, path)  # a column of lists and nulls, not needed: still by pyarrow
    _same(fast, slow)
    monkeypatch.setattr(io, "ARROW_MIN_BYTES", 0)
    monkeypatch.setattr(io, "_read_jsonl_arrow", lambda p: pytest.fail("the whole-file reader was used"))
    monkeypatch.setattr(io, "jsonl_records", lambda p: pytest.fail("the line reader was used"))
    assert io.load(path).prompt_ids == ["q0", "q1", "q2", "q3"]


def test_jsonl_blocks_of_several_mebibytes(tmp_path, monkeypatch):
    """Blocks are cut at newlines: rows across block boundaries keep their values and lines."""
    path = tmp_path / "s.jsonl"
    rng = np.random.default_rng(1)
    r = np.round(rng.standard_normal(40_000), 6)
    path.write_text("".join(f'{{"prompt_id": {i % 37}, "reward": {x}, "pad": "{"x" * 80}"}}\n'
                            for i, x in enumerate(r)))
    assert path.stat().st_size > 4 * 2**20
    fast, slow = _readers(monkeypatch, path)
    _same(fast, slow)
    assert fast.prompt_ids == list(range(37))


# -- Grouping rows by prompt with arrays: the padded layout of Samples.from_ragged.


@pytest.mark.parametrize("ids", [[3, 3, 1, 3, 1, 2], ["b", "a", "b", "c", "a", "a"], [0.0, 2.0, 0.0, 1.0, 2.0, 2.0]])
def test_grouping_matches_a_per_row_reference(ids):
    r = np.arange(len(ids), dtype=float) * 1.5
    table = io.Table("t", {"p": np.array(ids), "r": r}, np.arange(10, 10 + len(ids)))
    loaded = io.samples_from_table(table, prompt="p", reward="r")
    order = list(dict.fromkeys(int(x) if isinstance(x, float) else x for x in ids))  # first appearance
    assert loaded.prompt_ids == order
    for p, key in enumerate(order):
        rows = [i for i, x in enumerate(ids) if x == key]
        n = len(rows)
        np.testing.assert_array_equal(np.asarray(loaded.samples.rewards)[p, :n], r[rows])
        np.testing.assert_array_equal(np.asarray(loaded.samples.mask)[p], np.arange(loaded.samples.num_samples) < n)
        np.testing.assert_array_equal(loaded.lines[p], np.asarray(rows) + 10)
    assert loaded.label(len(order) - 1, 0).endswith(f"t:line {10 + ids.index(order[-1])})")


def test_a_prompt_without_a_positive_count_names_its_first_line(tmp_path):
    table = io.Table(tmp_path / "c.csv", {"p": np.array(["a", "b", "a", "b"]), "r": np.ones(4),
                                          "n": np.array([1.0, 0.0, 2.0, 0.0])}, np.arange(2, 6))
    with pytest.raises(io.DataError, match=r"c\.csv:line 3: prompt 'b' has no sample with a positive count"):
        io.samples_from_table(table, prompt="p", reward="r", count="n")


# -- info --stream: the in-memory figures, chunk by chunk.


def _file(tmp_path, weights: bool):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(90):  # prompts interleaved (not contiguous), ties at the top, zero counts
        p = int(rng.integers(0, 7))
        row = {"prompt_id": f"q{p}", "reward": float(np.round(rng.standard_normal(), 1)),
               "n": int(rng.integers(0, 3)) if i > 6 else 1}
        if weights:
            row["lw"] = float(rng.standard_normal())
        rows.append(row)
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("weights", [False, True])
def test_info_stream_gives_the_in_memory_figures(tmp_path, weights):
    path = _file(tmp_path, weights)
    cols = dict(count="n", log_weight="lw" if weights else None)
    samples = io.load(path, **cols).samples
    memory = info.describe(samples)
    for chunk in (1, 13, 1000):
        pp = streaming.summarize_files(path, chunk_rows=chunk, **cols)
        streamed = info.figures(pp, scores=False, dtype=str(samples.dtype))
        assert streamed.keys() == memory.keys()
        for k, v in memory.items():
            _close(streamed[k], v, f"{k} (chunks of {chunk})")


def _close(a, b, what=""):
    """Figures equal: numbers to 1e-12 relative (the same values summed in another order), the rest exactly."""
    if isinstance(b, (str, bool)):
        assert a == b, what
    else:
        np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-12, err_msg=what)


def test_info_stream_from_the_command_line(tmp_path, capsys):
    path = _file(tmp_path, False)
    outs = [tmp_path / "stream.json", tmp_path / "memory.json"]
    assert cli.main(["info", str(path), "--count-col", "n", "--stream", "--chunk-rows", "10", "--out",
                     str(outs[0])]) == 0
    assert cli.main(["info", str(path), "--count-col", "n", "--out", str(outs[1])]) == 0
    stream, memory = (json.loads(p.read_text()) for p in outs)
    assert stream["meta"]["source"]["stream"] and stream["meta"]["source"]["rows"] == 90
    for a, b in zip(stream["rows"], memory["rows"]):
        assert a["figure"] == b["figure"]
        _close(a["value"], b["value"], a["figure"])
    capsys.readouterr()
    assert cli.main(["info", str(path), "--stream", "--dedupe", "reward"]) == 2
    assert "--dedupe is not available with --stream" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_id": 0, "reward": 1, "n": 0}\n{"prompt_id": 1, "reward": 1, "n": 1}\n')
    assert cli.main(["info", str(bad), "--count-col", "n", "--stream", "--chunk-rows", "1"]) == 2
    assert f"{bad}:line 1: prompt 0 has no sample with a positive count" in capsys.readouterr().err
    assert cli.main(["info", str(path), "--stream", "--score-col", "gold"]) == 2
    assert "no column 'gold'" in capsys.readouterr().err


# -- Chunks for --stream: pyarrow blocks cut to chunk_rows, then line by line from a block they cannot read.


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_stream_chunks_by_pyarrow_match_the_line_reader(tmp_path, monkeypatch, suffix):
    rng = np.random.default_rng(2)
    n = 60_000
    r = np.round(rng.standard_normal(n), 6)
    if suffix == ".jsonl":
        lines = [f'{{"prompt_id": "q{i // 7}", "reward": {x}, "pad": "{"x" * 60}"}}\n' for i, x in enumerate(r)]
        lines[50_000] = "\n"  # a blank line in the second block: line by line from there on
        text = "".join(lines)
    else:
        lines = [f"q{i // 7},{x},{'x' * 60}\n" for i, x in enumerate(r)]
        lines[50_000] = ",,\n"  # a row of empty cells: skipped by the line reader
        text = "prompt_id,reward,pad\n" + "".join(lines)
    path = tmp_path / f"s{suffix}"
    path.write_text(text)
    assert path.stat().st_size > 4 * 2**20

    def chunks():
        got = list(streaming.iter_chunks(path, ["prompt_id", "reward"], chunk_rows=7_001))
        assert [len(t) for t in got[:-1]] == [7_001] * (len(got) - 1)
        return (np.concatenate([t.lines for t in got]), np.concatenate([t.column("reward") for t in got]),
                [k for t in got for k in t.keys("prompt_id")])

    monkeypatch.setattr(io, "ARROW_MIN_BYTES", 0)
    fast = chunks()
    monkeypatch.setattr(io, "ARROW_MIN_BYTES", float("inf"))
    slow = chunks()
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])
    assert fast[2] == slow[2] and len(slow[2]) == n - 1


def test_jsonl_blocks_whose_number_types_differ(tmp_path, monkeypatch):
    """Whole numbers in the first block, decimals in the next: one float column, as line by line."""
    path = tmp_path / "s.jsonl"
    n = 70_000
    rows = [f'{{"prompt_id": {i % 5}, "reward": {i if i < 55_000 else i + 0.5}, "pad": "{"x" * 80}"}}\n'
            for i in range(n)]
    path.write_text("".join(rows))
    fast, slow = _readers(monkeypatch, path)
    _same(fast, slow)
    assert float(np.asarray(fast.samples.rewards).max()) == n - 1 + 0.5


# -- Held as the data, not as text: ids as codes block by block, numbers padded in float32 as read.


@pytest.fixture(params=["float32", "float64"])
def precision(request):
    """JAX's default float (the suite runs with x64 on; float32 is what a CLI user gets)."""
    import jax

    jax.config.update("jax_enable_x64", request.param == "float64")
    yield request.param
    jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_ids_are_read_as_codes_block_by_block(tmp_path, monkeypatch, suffix, precision):
    """Ids coming back in later blocks keep their first code; the order is the first appearance."""
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 40, 900)
    r = np.round(rng.standard_normal(900), 6)
    if suffix == ".csv":
        text = "prompt_id,reward\n" + "".join(f"{i:03d},{x}\n" for i, x in zip(ids, r))  # text ids: '007'
    else:
        text = "".join(f'{{"prompt_id": {i}, "reward": {x}}}\n' for i, x in zip(ids, r))
    path = tmp_path / f"s{suffix}"
    path.write_text(text)
    monkeypatch.setattr(io, "BLOCK_BYTES", 512)  # ~40 blocks
    fast, slow = _readers(monkeypatch, path)
    _same(fast, slow)
    assert fast.samples.dtype == precision
    assert fast.prompt_ids == list(dict.fromkeys(f"{i:03d}" if suffix == ".csv" else int(i) for i in ids))
    monkeypatch.setattr(io, "ARROW_MIN_BYTES", 0)
    t = io.read_table(path, columns=["prompt_id", "reward"], numeric=["reward"], keys=["prompt_id"],
                      narrow=["reward"])
    import pyarrow as pa

    assert pa.types.is_dictionary(t.columns.raw("prompt_id").type)  # 4 bytes a row, not the text
    assert t.columns.raw("reward").dtype == np.float32
    fmt = (lambda i: f"{i:03d}") if suffix == ".csv" else int  # noqa: E731
    assert list(t.columns["prompt_id"][:3]) == [fmt(i) for i in ids[:3]]  # cells read back as the values


def test_jsonl_ids_of_two_kinds_in_different_blocks(tmp_path, monkeypatch):
    """Whole-number ids in the first blocks, text later: read as the line reader reads them."""
    path = tmp_path / "s.jsonl"
    path.write_text("".join(f'{{"prompt_id": {i % 7 if i < 300 else json.dumps(f"p{i % 5}")}, "reward": {i}}}\n'
                            for i in range(600)))
    monkeypatch.setattr(io, "BLOCK_BYTES", 512)
    fast, slow = _readers(monkeypatch, path)
    _same(fast, slow)
    assert fast.prompt_ids == list(range(7)) + [f"p{i}" for i in (0, 1, 2, 3, 4)]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_blank_id_or_float32_overflow_in_a_late_block(tmp_path, monkeypatch, suffix, precision):
    """A blank id and a reward float32 cannot hold, far from the first block: the same error either way."""
    rows = [(f"q{i % 9}", str(i * 0.25)) for i in range(800)]
    for case in ("blank", "big"):
        bad = list(rows)
        bad[700] = ("  ", "1.0") if case == "blank" else ("q3", "1e39")
        if suffix == ".csv":
            text = "prompt_id,reward\n" + "".join(f"{p},{r}\n" for p, r in bad)
        else:
            text = "".join(f'{{"prompt_id": "{p}", "reward": {r}}}\n' for p, r in bad)
        path = tmp_path / f"{case}{suffix}"
        path.write_text(text)
        monkeypatch.setattr(io, "BLOCK_BYTES", 512)
        messages = []
        for least in (0, float("inf")):
            monkeypatch.setattr(io, "ARROW_MIN_BYTES", least)
            if case == "big" and precision == "float64":  # held as it is, by both readers
                messages.append(float(np.asarray(io.load(path).samples.rewards).max()))
                continue
            with pytest.raises(ValueError) as e:
                io.load(path)
            messages.append(str(e.value))
        assert messages[0] == messages[1]
        line = 702 if suffix == ".csv" else 701
        expected = (f":line {line}: column 'prompt_id' is empty" if case == "blank" else
                    "= np.float32(inf) is not finite" if precision == "float32" else 1e39)
        assert expected == messages[0] if case == "big" and precision == "float64" else expected in messages[0]


def test_parquet_batches_match_the_whole_table(tmp_path, monkeypatch, precision):
    """Parquet read batch by batch (ids as codes, float32 where Samples stores it) gives the samples
    the whole-table reader gives; a null sends the file to the whole-table reader and its error."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 30, 700)
    cols = {"prompt_id": pa.array([f"p{i}" for i in ids]), "reward": rng.standard_normal(700),
            "gold": rng.standard_normal(700).astype(np.float32), "count": rng.integers(1, 4, 700), "x": ids}
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table(cols), path, row_group_size=100)
    monkeypatch.setattr(io, "_parquet_block_tables",
                        lambda p, f, keep, rows=2**16, real=io._parquet_block_tables: real(p, f, keep, rows=64))
    fast = io.load(path, score="gold", count="count")
    slow = io.samples_from_table(io.read_table(path), score="gold", count="count")  # every column, as one table
    _same(fast, slow)
    assert fast.samples.dtype == precision and fast.lines[0][:2].tolist() == [1, 2 + list(ids[1:]).index(ids[0])]
    assert fast.label(0, 0).endswith("s.parquet:row 1)")
    cols["reward"] = pa.array([None] + list(cols["reward"][1:]), pa.float64())
    pq.write_table(pa.table(cols), path, row_group_size=100)
    with pytest.raises(io.DataError, match=r"s.parquet:row 1: column 'reward' is .*nan.*, not a finite number"):
        io.load(path)


def test_float32_columns_are_stored_in_the_samples_dtype(tmp_path, precision):
    """A float32 column (.npz) gives float64 samples under x64, as before narrowing existed."""
    path = tmp_path / "s.npz"
    r = np.linspace(-1, 1, 12, dtype=np.float32)
    np.savez(path, prompt_id=np.repeat(np.arange(3), 4), reward=r)
    s = io.load(path).samples
    assert s.dtype == precision
    np.testing.assert_array_equal(np.asarray(s.rewards).reshape(-1), r.astype(precision))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_prompts_of_equal_size_in_order_are_padded_without_a_copy(tmp_path, monkeypatch, suffix, precision):
    """The samplers' layout (each prompt's rows together, all of one count): the column read is the
    [P, N] array as it is; the same samples as line by line, and as the general scatter."""
    rng = np.random.default_rng(5)
    r = np.round(rng.standard_normal(600), 6)
    path = tmp_path / f"s{suffix}"
    if suffix == ".parquet":
        pa = pytest.importorskip("pyarrow")
        pq = pytest.importorskip("pyarrow.parquet")
        pq.write_table(pa.table({"prompt_id": np.repeat(np.arange(12), 50), "reward": r}), path)
    elif suffix == ".csv":
        path.write_text("prompt_id,reward\n" + "".join(f"p{i // 50},{x}\n" for i, x in enumerate(r)))
    else:
        path.write_text("".join(f'{{"prompt_id": {i // 50}, "reward": {x}}}\n' for i, x in enumerate(r)))
    monkeypatch.setattr(io, "BLOCK_BYTES", 1024)
    monkeypatch.setattr(io, "ARROW_MIN_BYTES", 0)
    seen = []
    real = io._Groups.pad
    monkeypatch.setattr(io._Groups, "pad", lambda self, v, reuse=False: seen.append(self.uniform and reuse) or
                        real(self, v, reuse))
    fast = io.load(path)
    assert seen == [True]
    np.testing.assert_array_equal(np.asarray(fast.samples.rewards), r.astype(precision).reshape(12, 50))
    first = 152 if suffix == ".csv" else 151  # prompt 3's first line (row); a CSV has its header first
    assert np.asarray(fast.samples.mask).all() and fast.lines[3].tolist() == list(range(first, first + 50))
    table = io.read_table(path)  # every column: the scatter into new arrays
    scattered = io.samples_from_table(table)
    np.testing.assert_array_equal(np.asarray(fast.samples.rewards), np.asarray(scattered.samples.rewards))
