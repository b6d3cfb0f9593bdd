"""StreamFramer.feed: any byte stream frames or ends in one Broken (400/513), and the
result does not depend on how the stream was cut into segments."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipreg.errors import MessageTooLarge, ParseError
from sipreg.framing import Broken, KeepAlive, StreamFramer

from .strategies import TORTURE, mutated_torture

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Result = tuple[list[bytes | KeepAlive], int] | str

_PIECES = [b"\r\n", b"\r", b"\n", b"\r\n\r\n", b" ", b"l: 3", b"Content-Length: 1", b"x", b"0"]
pieces = st.lists(st.sampled_from(_PIECES) | st.binary(max_size=8), max_size=30).map(b"".join)
streams = st.one_of(
    st.binary(max_size=400),
    pieces,
    st.lists(mutated_torture(), min_size=1, max_size=3).map(b"".join),
    st.lists(st.sampled_from(sorted(TORTURE)), min_size=1, max_size=3).map(
        lambda names: b"".join(TORTURE[n] for n in names)
    ),
)


def frame(chunks: list[bytes], max_size: int) -> Result:
    """Everything the framer yields for ``chunks``, and what stays pending; or "error"."""
    framer = StreamFramer(max_size)
    out: list[bytes | KeepAlive] = []
    for chunk in chunks:
        for item in framer.feed(chunk):
            if isinstance(item, KeepAlive):
                # How pings in a row are grouped depends on the cuts; their number does not.
                last = out[-1] if out else None
                if isinstance(last, KeepAlive):
                    out[-1] = KeepAlive(last.count + item.count)
                else:
                    out.append(item)
                continue
            if isinstance(item, Broken):
                assert isinstance(item.error, ParseError | MessageTooLarge)
                assert framer.feed(b"more") == [] and framer.pending == 0
                # The error class may depend on the cuts (size or syntax first); either closes.
                return "error"
            out.append(item)
    return out, framer.pending


@FUZZ
@given(streams, st.data(), st.sampled_from([24, 200, 65535]))
def test_segmentation_does_not_matter(stream: bytes, data: st.DataObject, max_size: int) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    whole = frame([stream], max_size)
    assert frame(chunks, max_size) == whole
    assert frame([stream[i : i + 1] for i in range(len(stream))], max_size) == whole
    if isinstance(whole, str):
        return
    out, pending = whole
    framed = [m for m in out if isinstance(m, bytes)]
    # Framing only ever drops CRLFs between messages.
    pings = sum(m.count for m in out if isinstance(m, KeepAlive))
    assert sum(map(len, framed)) + 4 * pings + pending <= len(stream)
    assert all(m in stream for m in framed)
    assert all(len(m) <= max_size for m in framed)
