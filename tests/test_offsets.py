"""``streamlog.offsets``: the one strict parser of offsets and counts a user types (HTTP
query parameters, SSE ``Last-Event-ID``, command-line arguments)."""

from __future__ import annotations

import pytest

from streamlog.errors import StreamlogError
from streamlog.offsets import MAX_OFFSET, BadOffsetError, parse_count, parse_offset

WORDS = ("earliest", "latest")


@pytest.mark.parametrize("text, value", [("0", 0), ("42", 42), ("007", 7), (str(MAX_OFFSET - 1), MAX_OFFSET - 1),
                                         ("earliest", "earliest"), ("latest", "latest")])
def test_decimal_digits_and_the_words_given_are_accepted(text, value):
    assert parse_offset(text, "start", words=WORDS) == value


@pytest.mark.parametrize("text", ["", "1_000", " 5", "5 ", "+5", "-1", "-0", "5.0", "1e3", "0x10", "\u0663",
                                  "\uff15", "Latest", "earliest ", "nan"])
def test_anything_else_is_refused_naming_the_value(text):
    with pytest.raises(BadOffsetError) as caught:
        parse_offset(text, "start", words=WORDS)
    assert str(caught.value) == f"start must be an offset (decimal digits), 'earliest' or 'latest', not {text!r}"
    assert isinstance(caught.value, StreamlogError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("text", [str(MAX_OFFSET), "99999999999999999999", "1" + "0" * 5000])
def test_offsets_from_two_to_the_63_on_are_out_of_range(text):
    with pytest.raises(BadOffsetError, match=f"^--from {text[:40]} is out of range: it must be below {MAX_OFFSET}$"):
        parse_offset(text, "--from")


def test_a_lower_limit_and_other_types():
    with pytest.raises(BadOffsetError, match="Last-Event-ID 9223372036854775807 is out of range"):
        parse_offset(str(MAX_OFFSET - 1), "Last-Event-ID", limit=MAX_OFFSET - 1)
    with pytest.raises(BadOffsetError, match="^offset must be an offset \\(decimal digits\\), not int$"):
        parse_offset(5)


def test_counts():
    assert parse_count("0") == 0 and parse_count("10000", maximum=10_000) == 10_000
    with pytest.raises(BadOffsetError, match="^limit 10001 is out of range: at most 10000$"):
        parse_count("10001", maximum=10_000)
    with pytest.raises(BadOffsetError, match="^limit must be a count \\(decimal digits\\), not '1_0'$"):
        parse_count("1_0")
