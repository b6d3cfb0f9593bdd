"""The admin API's pure parts: cursors and page queries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipreg.admin.api import MAX_LIMIT, decode_cursor, encode_cursor, page_query
from sipreg.registrar.binding import Binding


@given(st.text(), st.text(min_size=1))
def test_a_cursor_stands_for_the_aor_and_key_it_was_made_from(aor: str, key: str) -> None:
    binding = Binding(aor=aor, contact="sip:x@h", expires_at=1.0, call_id="c", cseq=1, key=key)
    cursor = encode_cursor(binding)
    assert cursor.isascii() and "=" not in cursor
    assert decode_cursor(cursor) == (aor, key)


@given(st.text())
def test_any_other_cursor_is_a_value_error(cursor: str) -> None:
    try:
        aor, key = decode_cursor(cursor)
    except ValueError:
        return
    assert isinstance(aor, str) and isinstance(key, str)


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": str(MAX_LIMIT + 1)}, "limit"),
        ({"limit": "ten"}, "whole number"),
        ({"cursor": "WzFd"}, "cursor"),  # [1]
        ({"sort": "aor"}, "unknown parameter"),
    ],
)
def test_a_bad_query_says_what_is_wrong(params: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        page_query(params)


def test_a_query_with_everything() -> None:
    binding = Binding(aor="sip:a@h", contact="sip:x@h", expires_at=1.0, call_id="c", cseq=1)
    query = page_query({"prefix": "sip:a", "limit": "7", "cursor": encode_cursor(binding)})
    assert (query.prefix, query.limit, query.after, query.aor) == (
        "sip:a",
        7,
        ("sip:a@h", "sip:x@h"),
        None,
    )
    assert page_query({}).limit == 100
