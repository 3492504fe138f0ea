"""Tests for engine/logsink.py: lines, masking, batching, truncation."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.engine.logsink import MASK, LogLine, LogSink


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kwargs: object) -> tuple[LogSink, list[list[LogLine]], Clock]:
    batches: list[list[LogLine]] = []
    clock = Clock()
    sink = LogSink(batches.append, clock=clock, **kwargs)  # type: ignore[arg-type]
    return sink, batches, clock


def texts(batches: list[list[LogLine]]) -> list[str]:
    return [line.text for batch in batches for line in batch]


def test_lines_are_numbered_timestamped_and_split_on_lf_and_crlf() -> None:
    sink, batches, clock = make(start_number=10)
    sink.feed(b"one\r\ntwo\nthr")
    clock.now = 1001.0
    sink.feed(b"ee\n")
    sink.close()
    lines = [line for batch in batches for line in batch]
    assert [(x.number, x.text) for x in lines] == [
        (10, "one"),
        (11, "two"),
        (12, "three"),
    ]
    assert [x.timestamp for x in lines] == [1000.0, 1000.0, 1001.0]
    assert sink.lines_written == 3
    assert sink.bytes_seen == 15


def test_bare_carriage_return_keeps_the_last_visible_content() -> None:
    sink, batches, _ = make()
    sink.feed(b"10%\r50%\r100%\ndone\r\r\n\x1b[32mok\x1b[0m\n")
    sink.close()
    assert texts(batches) == ["100%", "done", "\x1b[32mok\x1b[0m"]


def test_section_markers_are_kept_whole() -> None:
    start = "\x1b[0Ksection_start:1700000000:step_script\r\x1b[0KRunning script"
    end = "\x1b[0Ksection_end:1700000001:step_script\r\x1b[0K"
    sink, batches, _ = make()
    sink.feed(f"{start}\nhello\n{end}\n".encode())
    sink.close()
    assert texts(batches) == [start, "hello", end]


def test_multibyte_character_split_across_chunks() -> None:
    data = "héllo wörld €\n".encode()
    sink, batches, _ = make()
    for i in range(len(data)):
        sink.feed(data[i : i + 1])
    sink.close()
    assert texts(batches) == ["héllo wörld €"]


def test_invalid_utf8_is_replaced() -> None:
    sink, batches, _ = make()
    sink.feed(b"bad \xff byte\n")
    sink.close()
    assert texts(batches) == ["bad \ufffd byte"]


def test_final_partial_line_is_emitted_on_close() -> None:
    sink, batches, _ = make()
    sink.feed(b"a\nno newline")
    sink.close()
    assert texts(batches) == ["a", "no newline"]


def test_secret_is_masked_even_split_across_chunks() -> None:
    sink, batches, _ = make(secrets=["hunter22"])
    sink.feed(b"password is hun")
    sink.feed(b"ter22 ok\n")
    sink.close()
    assert texts(batches) == [f"password is {MASK} ok"]


def test_short_secrets_are_not_masked() -> None:
    sink, batches, _ = make(secrets=["abc", "", "abcd"])
    sink.feed(b"abc abcd\n")
    sink.close()
    assert texts(batches) == [f"abc {MASK}"]


def test_overlapping_secrets_leak_nothing() -> None:
    sink, batches, _ = make(secrets=["abcdef", "defghi"])
    sink.feed(b"xabcdefghix\n")
    sink.close()
    assert texts(batches) == [f"x{MASK}x"]


def test_multiline_secret_is_masked_line_by_line() -> None:
    sink, batches, _ = make(
        secrets=["-----BEGIN KEY-----\nAAAABBBB\n-----END KEY-----"]
    )
    sink.feed(b"-----BEGIN KEY-----\nAAAABBBB\n-----END KEY-----\n")
    sink.close()
    assert texts(batches) == [MASK, MASK, MASK]


def test_early_partial_flush_holds_back_a_possible_secret_start() -> None:
    sink, batches, clock = make(secrets=["hunter22"])
    sink.feed(b"Password: hunt")
    clock.now += 0.1
    sink.flush()
    assert texts(batches) == []  # The output has not been quiet long enough.
    clock.now += 0.5
    sink.flush()
    assert texts(batches) == ["Password: "]
    sink.feed(b"er22\n")
    sink.close()
    assert texts(batches) == ["Password: ", MASK]


def test_a_late_reader_does_not_split_a_line_that_is_still_flowing() -> None:
    sink, batches, clock = make()
    sink.feed(b"99998\n999")
    clock.now += 0.06  # Longer than the batch interval: the reader was busy.
    sink.flush()
    sink.feed(b"99\n")
    sink.close()
    assert texts(batches) == ["99998", "99999"]


def test_early_partial_flush_then_newline_adds_no_empty_line() -> None:
    sink, batches, clock = make()
    sink.feed(b"Continue? ")
    clock.now += 1
    sink.flush()
    sink.feed(b"\nnext\n")
    sink.close()
    assert texts(batches) == ["Continue? ", "next"]


def test_batches_by_size_and_by_interval() -> None:
    sink, batches, clock = make(batch_lines=3, batch_interval=0.05)
    sink.feed(b"1\n2\n3\n4\n5\n6\n7\n")
    assert [len(b) for b in batches] == [3, 3]
    sink.feed(b"8\n")
    assert len(batches) == 2  # Line 7 waited only 0 s.
    clock.now += 0.06
    sink.feed(b"")
    assert [x.text for x in batches[-1]] == ["7", "8"]
    sink.feed(b"9\n")
    sink.flush()
    assert [x.text for x in batches[-1]] == ["9"]
    assert [x.number for b in batches for x in b] == list(range(1, 10))


def test_truncation_marker_and_counting() -> None:
    sink, batches, _ = make(max_bytes=10)
    sink.feed(b"12345\n67890\nabc\n")
    sink.feed(b"more\n")
    sink.close()
    assert texts(batches) == [
        "12345",
        "6789",
        "[slipway] log truncated after 10 bytes (limit 10); the job keeps running "
        "and its exit status is unaffected",
    ]
    assert sink.truncated
    assert sink.bytes_seen == 21


def test_truncation_never_emits_part_of_a_secret() -> None:
    sink, batches, _ = make(max_bytes=12, secrets=["topsecret"])
    sink.feed(b"token: topsecret\n")
    sink.close()
    assert not any("top" in t for t in texts(batches))


def test_long_line_without_newline_is_cut() -> None:
    sink, batches, _ = make()
    sink.feed(b"x" * 100_000)
    sink.feed(b"\n")
    sink.close()
    assert "".join(texts(batches)) == "x" * 100_000
    assert len(texts(batches)) == 2


def test_spinner_without_newline_uses_bounded_memory() -> None:
    sink, batches, _ = make()
    for i in range(2000):
        sink.feed(f"\rframe {i}".encode())
    assert len(sink._partial) < 100  # noqa: SLF001 - the property under test
    sink.feed(b"\n")
    sink.close()
    assert texts(batches) == ["frame 1999"]


def test_feed_from_two_threads_keeps_every_line() -> None:
    sink, batches, _ = make(batch_lines=7)

    def work(prefix: str) -> None:
        for i in range(500):
            sink.feed(f"{prefix}{i}\n".encode())
            sink.flush()

    threads = [threading.Thread(target=work, args=(p,)) for p in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close()
    numbers = [x.number for b in batches for x in b]
    assert numbers == list(range(1, 1001))
    assert sorted(texts(batches)) == sorted(f"{p}{i}" for p in "ab" for i in range(500))


SECRETS = ["s3cr3t!", "hunter22", "tok€n-ä", "abcdabce"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(SECRETS),
            st.text(alphabet="abcdeht3s!\n\r €ä", max_size=12),
        ),
        max_size=20,
    ),
    st.lists(st.integers(1, 9), max_size=40),
    st.lists(st.booleans(), max_size=40),
)
def test_random_chunking_never_leaks_a_secret(
    pieces: list[str], cuts: list[int], flushes: list[bool]
) -> None:
    data = " ".join(pieces).encode()
    sink, batches, clock = make(secrets=SECRETS)
    pos = 0
    for i, size in enumerate(cuts):
        sink.feed(data[pos : pos + size])
        pos += size
        clock.now += 0.1
        if i < len(flushes) and flushes[i]:
            sink.flush()
    sink.feed(data[pos:])
    sink.close()
    out = "\n".join(texts(batches))
    for secret in SECRETS:
        assert secret not in out
    # Numbers are consecutive whatever the chunking.
    numbers = [x.number for b in batches for x in b]
    assert numbers == list(range(1, len(numbers) + 1))


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="ab\n\r€x", max_size=60), st.lists(st.integers(1, 7), max_size=30)
)
def test_chunking_does_not_change_the_lines(text: str, cuts: list[int]) -> None:
    data = text.encode()
    whole, whole_batches, _ = make()
    whole.feed(data)
    whole.close()
    split, split_batches, _ = make()
    pos = 0
    for size in cuts:
        split.feed(data[pos : pos + size])
        pos += size
    split.feed(data[pos:])
    split.close()
    assert texts(split_batches) == texts(whole_batches)
