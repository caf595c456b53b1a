"""pandas objects through the reduce protocol (strict=False), with their numeric blocks
going out of band as numpy arrays: zero copy on write and on read, and as many buffers
as pickle protocol 5 makes."""

from __future__ import annotations

import pickle

import pytest

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")

import pyfory  # noqa: E402
from pyfory.buffers import BufferObject  # noqa: E402
from pyfory.error import OutOfBandBufferError  # noqa: E402

N = 1000


@pytest.fixture(params=[False, True], ids=["ref=False", "ref=True"])
def fory(request):
    return pyfory.Fory(ref=request.param, strict=False)


def dumps_oob(fory, obj):
    offered = []
    payload = fory.dumps(obj, buffer_callback=lambda bo: offered.append(bo) and False)
    return payload, offered


def pickle_buffer_count(obj) -> int:
    buffers = []
    pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return len(buffers)


def assert_equal(a, b):
    assert type(b) is type(a)
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b)
    elif isinstance(a, pd.Index):
        pd.testing.assert_index_equal(a, b, exact=True)
    elif isinstance(a, pd.Categorical):
        pd.testing.assert_extension_array_equal(a, b)
        assert list(b.categories) == list(a.categories) and b.ordered == a.ordered
    else:
        assert a == b


def numeric_frame(n=N):
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "f64": rng.standard_normal(n), "f32": rng.standard_normal(n).astype(np.float32),
        "i64": np.arange(n), "i8": (np.arange(n) % 100).astype(np.int8), "u16": np.arange(n, dtype=np.uint16),
        "b": np.arange(n) % 3 == 0, "f64b": np.linspace(0, 1, n),
    })


def mixed_frame(n=N):
    df = numeric_frame(n)
    df["s"] = [f"row {i}" for i in range(n)]
    df["cat"] = pd.Categorical(["red", "green", "blue", "red"] * (n // 4))
    df["t"] = pd.date_range("2020-01-01", periods=n, freq="h")
    df["tz"] = pd.date_range("2020-01-01", periods=n, freq="min", tz="Europe/Paris")
    df["td"] = pd.to_timedelta(np.arange(n), unit="s")
    df["nullable"] = pd.array([None if i % 7 == 0 else i for i in range(n)], dtype="Int64")
    df["obj"] = [(i, "x") if i % 2 else None for i in range(n)]
    return df


def values():
    df = mixed_frame()
    return {
        "numeric-frame": numeric_frame(),
        "mixed-frame": df,
        "frame-string-index": df.set_index("s"),
        "frame-multiindex": df.set_index(["i8", "cat"]),
        "frame-multiindex-columns": pd.DataFrame(
            np.arange(12.0).reshape(3, 4),
            columns=pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["outer", "inner"])),
        "frame-empty": pd.DataFrame(),
        "series-float": pd.Series(np.linspace(0, 1, N), name="x"),
        "series-datetime-index": pd.Series(np.arange(N), index=pd.date_range("2021-01-01", periods=N)),
        "series-categorical": df["cat"],
        "series-string": df["s"],
        "series-nullable": df["nullable"],
        "range-index": pd.RangeIndex(5, 100, 3),
        "int-index": pd.Index(np.arange(N) * 2),
        "string-index": pd.Index(["a", "b", "c"]),
        "datetime-index": pd.date_range("2020-01-01", periods=50, freq="D", tz="UTC"),
        "multiindex": pd.MultiIndex.from_product([[1, 2, 3], ["a", "b"]], names=["n", "s"]),
        "categorical-index": pd.CategoricalIndex(["a", "b", "a"], categories=["b", "a"], ordered=True),
        "categorical": pd.Categorical(["x", "y", "x", None], categories=["y", "x", "z"], ordered=True),
        "timestamp": pd.Timestamp("2020-01-02 03:04:05", tz="US/Eastern"),
        "timedelta": pd.Timedelta("1 days 2 hours"),
        "period": pd.Period("2020-03", freq="M"),
        "interval": pd.Interval(0, 5, closed="left"),
    }


VALUES = values()


@pytest.mark.parametrize("name", list(VALUES))
def test_round_trip_in_band(fory, name):
    value = VALUES[name]
    loaded = fory.loads(fory.dumps(value))
    assert_equal(value, loaded)
    assert_equal(value, pyfory.Fory(ref=fory.ref, strict=False).loads(fory.dumps(value)))


@pytest.mark.parametrize("name", list(VALUES))
def test_round_trip_out_of_band(fory, name):
    value = VALUES[name]
    payload, offered = dumps_oob(fory, value)
    assert all(isinstance(bo, BufferObject) for bo in offered)
    receivers = [bytearray(bo.raw()) for bo in offered]
    loaded = pyfory.Fory(ref=fory.ref, strict=False).loads(payload, buffers=receivers)
    assert_equal(value, loaded)
    if offered:
        with pytest.raises(OutOfBandBufferError):
            fory.loads(payload)


def test_numeric_blocks_go_out_of_band_zero_copy(fory):
    df = numeric_frame(100_000)
    payload, offered = dumps_oob(fory, df)
    numeric_bytes = sum(df[c].to_numpy().nbytes for c in df.columns)
    # one buffer per block (float64, float32, int64, int8, uint16, bool), as pickle makes
    assert len(offered) == pickle_buffer_count(df)
    assert sum(bo.total_bytes() for bo in offered) == numeric_bytes
    assert len(payload) < 2000, "only headers and names stay in the payload"
    # write side: every column's memory is handed out as is (a view, not a copy)
    for c in df.columns:
        col = df[c].to_numpy()
        assert any(np.shares_memory(np.frombuffer(bo.getbuffer(), np.uint8), col) for bo in offered), c
    # read side: every column is a view of a buffer passed in
    receivers = [bytearray(bo.raw()) for bo in offered]
    loaded = fory.loads(payload, buffers=receivers)
    pd.testing.assert_frame_equal(df, loaded)
    for c in df.columns:
        col = loaded[c].to_numpy()
        assert any(np.shares_memory(col, np.frombuffer(r, np.uint8)) for r in receivers), c


def test_payload_size_does_not_grow_with_the_data_out_of_band(fory):
    small, _ = dumps_oob(fory, numeric_frame(1_000))
    large, offered = dumps_oob(fory, numeric_frame(200_000))
    assert len(large) < len(small) + 64
    assert sum(bo.total_bytes() for bo in offered) > 200_000 * 8


def test_thousand_column_frame(fory):
    df = pd.DataFrame(np.random.default_rng(2).standard_normal((500, 1000)),
                      columns=[f"c{i}" for i in range(1000)])
    payload, offered = dumps_oob(fory, df)
    assert len(offered) == pickle_buffer_count(df) == 1
    assert offered[0].total_bytes() == df.to_numpy().nbytes
    loaded = fory.loads(payload, buffers=offered)
    pd.testing.assert_frame_equal(df, loaded)
    # column by column (not consolidated): one buffer per column, like pickle
    df2 = pd.DataFrame({f"c{i}": np.arange(50.0) + i for i in range(1000)})
    payload, offered = dumps_oob(fory, df2)
    assert len(offered) == pickle_buffer_count(df2)
    pd.testing.assert_frame_equal(df2, fory.loads(payload, buffers=offered))


def test_shared_values_are_written_once():
    # pandas' own state names each block's values twice: written once, even with ref=False
    s = pd.Series(np.arange(10_000.0))
    fory = pyfory.Fory(ref=False, strict=False)
    payload, offered = dumps_oob(fory, s)
    assert len(offered) == 1
    assert len(fory.dumps(s)) < s.to_numpy().nbytes + 1000


def test_strict_mode_refuses_pandas_without_registration():
    with pytest.raises(pyfory.error.TypeNotRegisteredError):
        pyfory.Fory(strict=True).dumps(pd.Series([1.0, 2.0]))
