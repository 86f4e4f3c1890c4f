"""The item value model (streamlog.items): pure checks, no database, plus one round trip
on both backends (the ``url`` fixture)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

import streamlog
from streamlog.errors import BadItemError
from streamlog.items import MAX_DEPTH, MAX_ITEM_BYTES, decode, encode, encode_many, normalize, normalize_many


def check(items: list) -> list[bytes]:
    """What Stream.append/extend do before writing anything."""
    return encode_many(normalize_many(items))


def bad(items: list, *fragments: str) -> str:
    with pytest.raises(BadItemError) as caught:
        check(items)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def nested(levels: int, leaf=1, kind: str = "dict"):
    """An item with ``levels`` levels of containers (the item itself is level 1)."""
    value = leaf
    for _ in range(levels - 1):
        value = {"a": value} if kind == "dict" else [value]
    return {"a": value}


# ---------------------------------------------------------------------------
# numpy scalars: converted explicitly by kind


def test_numpy_longdouble_is_a_float_not_a_recursion():
    assert normalize({"x": np.longdouble(1.5)}) == {"x": 1.5}
    assert type(normalize({"x": np.longdouble(1.5)})["x"]) is float
    assert normalize({"x": np.array([1.5, 2.5], dtype=np.longdouble)}) == {"x": [1.5, 2.5]}
    bad([{"x": np.longdouble(10) ** 4000}], "item 0:", "at x", "64-bit float range")


@pytest.mark.parametrize("value, expected, kind", [
    (np.float16(0.5), 0.5, float), (np.float32(0.25), 0.25, float), (np.float64(0.1), 0.1, float),
    (np.int8(-3), -3, int), (np.uint64(7), 7, int), (np.int64(2**62), 2**62, int),
    (np.bool_(True), True, bool), (np.str_("é"), "é", str),
])
def test_numpy_scalars_become_plain_python_values(value, expected, kind):
    out = normalize({"v": value, "l": [value]})
    assert out == {"v": expected, "l": [expected]}
    assert type(out["v"]) is kind and type(out["l"][0]) is kind


@pytest.mark.parametrize("value", [np.complex128(1 + 2j), np.timedelta64(5, "s"), np.bytes_(b"x"),
                                   np.void(b"x"), np.array([1 + 2j]), np.array([b"x"])])
def test_other_numpy_values_are_bad_items(value):
    bad([{"ok": 1}, {"deep": {"v": value}}], "item 1:", "deep.v")


def test_numpy_integers_outside_64_bits_are_bad_items():
    bad([{"v": np.uint64(2**64 - 1)}], "item 0:", "at v", "64-bit")


def test_numpy_datetimes_keep_their_instant_or_are_bad_items():
    expected = datetime(2020, 1, 1, 0, 0, 0, 123000, tzinfo=timezone.utc)
    arr = np.array(["2020-01-01T00:00:00.123456789"], dtype="datetime64[ns]")
    assert normalize({"t": arr}) == {"t": [expected]}  # not nanosecond integers
    assert normalize({"t": np.datetime64("2020-01-01", "D")})["t"] == expected.replace(microsecond=0)
    assert normalize({"t": np.datetime64("NaT")}) == {"t": None}
    bad([{"t": np.datetime64(10**16, "Y")}], "at t", "out of range")
    bad([{"t": np.datetime64("10000-01-01")}], "at t", "out of range")


# ---------------------------------------------------------------------------
# datetimes: anything not representable as UTC milliseconds


@pytest.mark.parametrize("value", [
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
    datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5))),
])
def test_datetimes_out_of_range_in_utc_are_bad_items(value):
    bad([{"ok": 1}, {"when": {"t": value}}], "item 1:", "when.t", "out of range")


def test_datetimes_at_the_edges_of_the_range_round_trip_through_encode():
    for value in (datetime(1, 1, 1, tzinfo=timezone.utc), datetime(9999, 12, 31, 23, 59, 59, 999999)):
        item = normalize({"t": value})
        assert decode(encode(item)) == item


# ---------------------------------------------------------------------------
# strings that are not valid UTF-8


def test_a_lone_surrogate_in_a_value_is_a_bad_item_naming_its_path():
    bad([{"a": "fine"}, {"a": {"b": ["x", "bad \ud800"]}}], "item 1:", "a.b[1]", "surrogate")


def test_a_lone_surrogate_in_a_key_is_a_bad_item():
    message = bad([{"a": {"k\udfff": 1}}], "item 0:", "surrogate", "at a")
    message.encode("utf-8")  # the message itself is printable


def test_surrogate_pairs_written_as_text_are_fine():
    assert check([{"emoji": "\U0001F600", "é": "ü"}]) == ['{"emoji":"😀","é":"ü"}'.encode()]


# ---------------------------------------------------------------------------
# nesting


def test_max_depth_levels_are_allowed_one_more_is_a_bad_item():
    assert MAX_DEPTH == 64
    for kind in ("dict", "list"):
        check([nested(MAX_DEPTH, kind=kind)])
        bad([nested(MAX_DEPTH + 1, kind=kind)], "item 0:", f"more than {MAX_DEPTH} levels")
    bad([nested(300)], "levels")  # beyond orjson's own recursion limit: still a BadItemError


def test_a_self_containing_item_is_a_bad_item_not_a_recursion_error():
    item: dict = {"a": 1}
    item["self"] = item
    bad([item], "levels")


# ---------------------------------------------------------------------------
# numbers


def test_negative_zero_is_stored_as_zero():
    out = normalize({"z": -0.0, "l": [-0.0], "n": np.float32(-0.0), "d": {"z": -0.0}})
    for value in (out["z"], out["l"][0], out["n"], out["d"]["z"]):
        assert value == 0.0 and math.copysign(1, value) == 1
    assert check([{"z": -0.0}]) == [b'{"z":0.0}']


def test_nan_and_infinities_become_none():
    assert normalize({"a": math.nan, "b": [math.inf], "c": np.float64(-np.inf)}) == {"a": None, "b": [None], "c": None}


def test_integers_stay_integers_within_64_bits():
    out = normalize({"big": 2**40, "max": 2**63 - 1, "min": -(2**63)})
    assert all(type(v) is int for v in out.values())
    bad([{"v": [2**63]}], "v[0]", "64-bit")


# ---------------------------------------------------------------------------
# size


def test_one_mib_encoded_is_the_limit():
    assert MAX_ITEM_BYTES == 1_048_576
    overhead = len(encode({"s": ""}))
    fits = {"s": "x" * (MAX_ITEM_BYTES - overhead)}
    assert len(check([fits])[0]) == MAX_ITEM_BYTES
    over = {"s": "x" * (MAX_ITEM_BYTES - overhead + 1)}
    message = bad([{"a": 1}, fits, over], "item 2:", f"{MAX_ITEM_BYTES + 1} bytes encoded", "over the 1 MiB limit")
    assert len(message) < 200


def test_the_limit_counts_the_canonical_encoding_not_the_python_size():
    # 100,000 floats in one list: one modest item in Python, about 1.2 MB as JSON.
    bad([{"v": [0.123456789] * 100_000}], "item 0:", "over the 1 MiB limit")


def test_encode_many_returns_encode_output():
    items = normalize_many([{"t": datetime(2024, 5, 1, tzinfo=timezone.utc), "x": 1.5}, {"y": None}])
    assert encode_many(items) == [encode(item) for item in items]
    assert encode_many([]) == []


def test_encode_many_reports_unnormalized_values_as_bad_items():
    bad([{"a": {1, 2}}], "item 0:", "at a")  # a set: normalize would have refused it
    with pytest.raises(BadItemError, match="item 0: .*at a"):
        encode_many([{"a": {1, 2}}])


# ---------------------------------------------------------------------------
# both backends: what goes in comes back the same


def test_values_round_trip_identically_on_every_backend(url):
    stream = streamlog.connect(url).stream("values")
    offset = stream.append({"z": -0.0, "zl": [-0.0], "big": 2**40, "neg": -(2**40), "small": 7})
    data = stream.read(offset, limit=1)[0]["data"]
    assert data["z"] == 0.0 and math.copysign(1, data["z"]) == 1
    assert data["zl"] == [0.0] and math.copysign(1, data["zl"][0]) == 1
    assert data["big"] == 2**40 and type(data["big"]) is int
    assert data["neg"] == -(2**40) and type(data["neg"]) is int
    assert type(data["small"]) is int


def test_bad_items_store_nothing_on_every_backend(url):
    stream = streamlog.connect(url).stream("values")
    for item in ({"s": "\ud800"}, nested(MAX_DEPTH + 1), {"s": "x" * MAX_ITEM_BYTES},
                 {"t": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))}, {"v": np.longdouble(10) ** 4000}):
        with pytest.raises(BadItemError):
            stream.extend([{"ok": 1}, item])
    assert len(stream.read(0)) == 0


def test_append_of_a_flat_item_under_known_keys_stores_its_canonical_form(url):
    # Stream.append's one-item path (plain.encode_plain_one) once the keys are known; on
    # MongoDB the item itself is the stored document (decoded from its encoding when it
    # holds a NaN or ±inf).
    stream = streamlog.connect(url).stream("plain")
    stream.append({"v": 1, "s": "x"})  # the keys become known
    values = [-0.0, 0, "-0.0,", 2**60, float("nan"), True, None, 1.5]
    offsets = [stream.append({"v": v, "s": "-0.0}"}) for v in values]
    stored = [r["data"]["v"] for r in stream.read(offsets[0], limit=None)]
    assert stored[0] == 0.0 and math.copysign(1, stored[0]) == 1
    assert stored[1:4] == [0, "-0.0,", 2**60] and type(stored[3]) is int
    assert stored[4] is None and stored[5] is True and stored[6] is None and stored[7] == 1.5
    with pytest.raises(BadItemError):
        stream.append({"v": 1, "s": "x" * MAX_ITEM_BYTES})
    assert stream.info()["length"] == 1 + len(values)


def test_extend_of_flat_items_under_known_keys_stores_their_canonical_form(url):
    # Stream.extend's batch path (plain.encode_plain + plain_documents on MongoDB).
    stream = streamlog.connect(url).stream("plain")
    stream.extend([{"v": 1, "w": 2.5}, {"v": 2, "w": 3.5}])  # the keys become known
    batch = [{"v": math.nan, "w": 1.0}, {"v": math.inf, "w": None}, {"v": 2**60, "w": -math.inf}, {"v": "x", "w": 0.5}]
    offsets = stream.extend(batch)
    stored = [r["data"] for r in stream.read(offsets[0], limit=None)]
    assert stored == [{"v": None, "w": 1.0}, {"v": None, "w": None}, {"v": 2**60, "w": None}, {"v": "x", "w": 0.5}]
    assert batch[0]["v"] != batch[0]["v"]  # the caller's items are not changed (still NaN)
