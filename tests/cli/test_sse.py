"""The SSE reader follows the event-stream rules the scheduler and the runtime rely on."""

from __future__ import annotations

from chutes.sse import SSEParser, SSEvent


def feed(text: str) -> list[SSEvent]:
    parser = SSEParser()
    events = [e for line in text.split("\n") if (e := parser.feed(line)) is not None]
    last = parser.flush()
    return [*events, *([last] if last else [])]


def test_events_with_ids_types_and_multiline_data() -> None:
    text = 'id: 1\nevent: accepted\ndata: {"a": 1}\n\n: keep-alive\n\ndata: line one\ndata: line two\n\n'
    assert feed(text) == [
        SSEvent(event="accepted", data='{"a": 1}', id="1"),
        SSEvent(event="message", data="line one\nline two", id="1"),
    ]


def test_comments_and_blank_lines_alone_make_no_event() -> None:
    assert feed(": ping\n\n\n: ping\n\n") == []


def test_crlf_and_no_space_after_colon_and_unterminated_last_event() -> None:
    assert feed("data:x\r\n\r\ndata: y") == [SSEvent("message", "x"), SSEvent("message", "y")]


def test_unknown_fields_are_ignored() -> None:
    assert feed("retry: 10\nfoo: bar\ndata: z\n\n") == [SSEvent("message", "z")]
