"""turnstile.engine.framing: the SDK's buffering cases (peer cases 43-54) and bounded memory for huge lines."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from turnstile.engine.framing import LineFramer, Oversized, Truncated


def frame_all(chunks: list[bytes], max_line: int = 1 << 20) -> list[object]:
    f = LineFramer(max_line)
    out: list[object] = []
    for c in chunks:
        out += f.feed(c)
    return out + f.eof()


def test_43_two_objects_in_one_chunk() -> None:
    assert frame_all([b'{"a":1}\n{"b":2}\n']) == [b'{"a":1}', b'{"b":2}']


def test_44_escaped_newlines_stay_inside() -> None:
    line = json.dumps({"text": "a\nb"}).encode()
    assert frame_all([line + b"\n"]) == [line]


def test_45_blank_lines_are_frames_the_decoder_ignores() -> None:
    assert frame_all([b'{"a":1}\n\n\n{"b":2}\n']) == [b'{"a":1}', b"", b"", b'{"b":2}']


def test_46_47_split_across_chunks() -> None:
    big = json.dumps({"text": "x" * 300_000}).encode()
    chunks = [big[i : i + 65536] for i in range(0, len(big), 65536)] + [b"\n"]
    assert frame_all(chunks) == [big]


def test_48_oversized_unterminated_and_terminated() -> None:
    out = frame_all([b"x" * 100], max_line=10)
    assert out == [Oversized(length=100, head=b"x" * 10, tail=b"x" * 10, limit=10)]
    out = frame_all([b"y" * 50 + b"\n" + b'{"ok":1}\n'], max_line=10)
    assert isinstance(out[0], Oversized) and out[0].length == 50
    assert out[1] == b'{"ok":1}'


def test_49_mixed_complete_and_split() -> None:
    a, b, c = (json.dumps({"n": i, "t": "z" * 5000}).encode() for i in range(3))
    stream = a + b"\n" + b + b"\n" + c + b"\n"
    chunks = [stream[:7000], stream[7000:9000], stream[9000:]]
    assert frame_all(chunks) == [a, b, c]


def test_51_whitespace_on_chunk_seams_preserved() -> None:
    line = b'{"t":"a' + b" " * 200_000 + b'b"}'
    chunks = [line[i : i + 65536] for i in range(0, len(line), 65536)] + [b"\n"]
    assert frame_all(chunks) == [line]


def test_53_last_object_without_newline_is_truncated_frame() -> None:
    # The SDK yields a valid unterminated last object; we report the bytes as Truncated and let the
    # caller decide (the log keeps them as a `truncated` decode error — the CLI always ends lines).
    assert frame_all([b'{"a":1}\n{"b":2}']) == [b'{"a":1}', Truncated(raw=b'{"b":2}')]


def test_54_valid_then_truncated_tail() -> None:
    assert frame_all([b'{"a":1}\n{"b":']) == [b'{"a":1}', Truncated(raw=b'{"b":')]


def test_oversized_memory_is_bounded() -> None:
    f = LineFramer(max_line=1024, keep=64)
    for _ in range(1000):
        f.feed(b"q" * 10_000)
    assert f.pending == 10_000_000
    # Only head and tail are held, whatever the line's length.
    assert len(f._head) == 64 and len(f._tail) == 64
    (frame,) = f.feed(b"\n")
    assert isinstance(frame, Oversized) and frame.length == 10_000_000


@given(st.lists(st.binary(max_size=50), max_size=20), st.integers(min_value=1, max_value=40))
def test_framing_is_chunking_independent(parts: list[bytes], cut: int) -> None:
    data = b"".join(parts)
    whole = frame_all([data], max_line=64)
    pieces = [data[i : i + cut] for i in range(0, len(data), cut)]
    assert frame_all(pieces, max_line=64) == whole
    # Every byte is accounted for: lines plus newlines (or an oversized length) add up.
    total = 0
    for fr in whole:
        if isinstance(fr, bytes):
            total += len(fr) + 1
        elif isinstance(fr, Oversized):
            total += fr.length + 1
        else:
            assert isinstance(fr, Truncated)
            total += len(fr.raw)
    ends_open = bool(whole) and not isinstance(whole[-1], bytes) and not data.endswith(b"\n")
    assert total == len(data) + (1 if ends_open and isinstance(whole[-1], Oversized) else 0)


@given(
    st.lists(st.binary(max_size=90).map(lambda b: b.replace(b"\n", b"")), max_size=12),
    st.lists(st.integers(min_value=1, max_value=120), min_size=1, max_size=8),
    st.booleans(),
)
def test_the_one_split_fast_path_equals_the_careful_path(
    lines: list[bytes], cuts: list[int], trailing_newline: bool
) -> None:
    """feed() splits whole chunks in one go when it can; the result must equal feeding byte ranges
    through the careful path (the one that handles lines over the limit), for any chunking."""
    data = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    chunks, i, k = [], 0, 0
    while i < len(data):
        chunks.append(data[i : i + cuts[k % len(cuts)]])
        i += cuts[k % len(cuts)]
        k += 1
    fast, careful = LineFramer(max_line=64, keep=16), LineFramer(max_line=64, keep=16)
    got = [fr for c in chunks for fr in fast.feed(c)] + fast.eof()
    want = [fr for c in chunks for fr in careful._feed_each(c)] + careful.eof()
    assert got == want
